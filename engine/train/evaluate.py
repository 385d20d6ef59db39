"""Held-out loss per domain during training: mean per-token loss and bits per byte on fixed windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.train.device import DeviceInfo


@dataclass
class EvalResult:
    loss: float
    domain_loss: dict[str, float]
    domain_bpb: dict[str, float] | None


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, windows: dict[str, np.ndarray], micro_batch: int, dev: DeviceInfo,
    domain_bytes: dict[str, int] | None = None,
) -> EvalResult:
    """Loss over each domain's windows (in micro batches of the training shape), and their mean."""
    was_training = model.training
    model.eval()
    domain_loss, domain_nats = {}, {}
    try:
        for domain, rows in windows.items():
            total = torch.zeros((), dtype=torch.float64, device=dev.device)
            tokens = 0
            for i in range(0, len(rows), micro_batch):
                x = torch.from_numpy(rows[i:i + micro_batch]).to(dev.device)
                with dev.autocast():
                    per_token = model.loss(x[:, :-1], x[:, 1:], reduction="none")
                total += per_token.double().sum()
                tokens += per_token.numel()
            nats = float(total)
            domain_nats[domain] = nats
            domain_loss[domain] = nats / max(tokens, 1)
    finally:
        model.train(was_training)
    loss = sum(domain_loss.values()) / len(domain_loss) if domain_loss else float("nan")
    bpb = None
    if domain_bytes:
        bpb = {d: domain_nats[d] / (math.log(2) * domain_bytes[d]) for d in domain_nats if domain_bytes.get(d)}
    return EvalResult(loss=loss, domain_loss=domain_loss, domain_bpb=bpb)
