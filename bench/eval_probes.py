"""Probe and sample time of the eval harness: prompts generated in batches against one at a time.

Loads a run's latest checkpoint and its held-out text, then runs the four probes and the sample
generations twice with the same limits: with ModelLM batch 1 (one prompt per generation, as before
batching) and with batch 8 (prompts generated together, padding masked). Checks that both give the
same scores and texts, and prints the seconds of each and the ratio, with the device.

    flock /tmp/bench.lock .venv/bin/python bench/eval_probes.py RUN_DIR [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.eval.harness import EvalLimits, ModelLM, load_heldout, probe_docs, sample_generations  # noqa: E402
from engine.eval.probes import PROBES, probe_module  # noqa: E402
from engine.eval.run_model import find_checkpoint, load_model, load_tokenizer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = find_checkpoint(args.run_dir)
    model = load_model(ckpt, args.device)
    tok = load_tokenizer(ckpt)
    limits = EvalLimits()
    heldout = load_heldout(ckpt.spec.shards, ckpt.spec.domains, probe_docs(limits))

    def run(batch: int) -> tuple[float, dict]:
        lm = ModelLM(model, tok, batch)
        start = time.perf_counter()
        got = {}
        for name in PROBES:
            mod = probe_module(name)
            if heldout.get(mod.DOMAIN) and name != "science":  # science scores likelihoods: no generation
                r = mod.run(lm, heldout[mod.DOMAIN], getattr(limits, name), limits.seed)
                got[name] = (r.metrics, r.examples)
        got["samples"] = sample_generations(lm, heldout, limits)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, got

    run(8)  # warm-up
    t1, one = run(1)
    t8, many = run(8)
    assert one == many, "batched and one-at-a-time probes disagree"
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({args.threads} threads)"
    print(f"run {ckpt.spec.run_id} step {ckpt.step} ({model.num_params():,} params): chess {limits.chess}, "
          f"code {limits.code}, data {limits.data} items, {limits.samples} sample x {limits.sample_tokens} tokens "
          f"per domain; same results both ways")
    print(f"one prompt at a time {t1:.2f} s | batches of 8 {t8:.2f} s | {t1 / t8:.2f}x faster")
    print(f"device: {dev}, {platform.machine()}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
