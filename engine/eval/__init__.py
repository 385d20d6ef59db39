"""Scoring a trained run: held-out bits per byte per domain, the domain probes, sample generations.

Owns a run's `evals.jsonl`. May import the core, data, model and jobs packages, never train or
export (the trainer calls into this package for its in-training probes). Importing it does not
import torch.
"""
