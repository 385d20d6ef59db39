"""Checkpoint save and load time of the trainer (engine.train.checkpoint) against a plain torch.save.

Model: the `stage0` preset at vocab 50,000 (~148M parameters, fp32) with AdamW state after one step,
on the CPU. Ours: model.safetensors + optim.pt (flat tensors) + state.json in a temp folder,
fsynced, renamed into place; loaded with safetensors and torch.load(weights_only=True).
Baseline: one torch.save({"model": state_dict, "optim": optimizer.state_dict()}) file, fsynced
(the same durability), loaded with torch.load(weights_only=True) and load_state_dict.
Rounds alternate between the two; prints medians, the ratios (ours / baseline) and the device.

    flock /tmp/bench.lock .venv/bin/python bench/checkpoint.py [--rounds 3] [--preset stage0]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.model.decoder import Transformer  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.train import checkpoint as ckpt  # noqa: E402


def build(preset: str, vocab: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model with AdamW state (one step on a constant gradient fills exp_avg/exp_avg_sq)."""
    torch.manual_seed(0)
    model = Transformer(PRESETS[preset].with_vocab(vocab))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt


def ours_save(root: Path, model, opt) -> Path:
    return ckpt.save_checkpoint(root / "ckpt", 1, model, opt, {"step": 1}, keep=1)


def ours_load(where: Path, model, opt) -> None:
    ckpt.read_state(where)
    ckpt.load_weights(where, model)
    ckpt.load_optimizer(where, opt)


def base_save(root: Path, model, opt) -> Path:
    path = root / "baseline.pt"
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def base_load(path: Path, model, opt) -> None:
    data = torch.load(path, weights_only=True)
    model.load_state_dict(data["model"])
    opt.load_state_dict(data["optim"])


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="stage0")
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()

    model, opt = build(args.preset, args.vocab)
    n_params = sum(p.numel() for p in model.parameters())
    root = Path(tempfile.mkdtemp(prefix="fcw-bench-ckpt-", dir=args.dir))
    times = {k: [] for k in ("ours_save", "ours_load", "base_save", "base_load")}
    try:
        for r in range(args.rounds):
            order = [("ours", ours_save, ours_load), ("base", base_save, base_load)]
            if r % 2:
                order.reverse()
            for name, save, load in order:
                t, where = timed(save, root, model, opt)
                times[f"{name}_save"].append(t)
                t, _ = timed(load, where, model, opt)
                times[f"{name}_load"].append(t)
        size_ours = sum(f.stat().st_size for f in (root / "ckpt" / "step-1").iterdir())
        size_base = (root / "baseline.pt").stat().st_size
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device: CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"model: {args.preset} at vocab {args.vocab:,}: {n_params:,} parameters; "
          f"checkpoint {size_ours / 2**30:.2f} GiB (ours) / {size_base / 2**30:.2f} GiB (baseline)")
    print(f"rounds: {args.rounds} (medians; all: " + ", ".join(f"{k} {[round(x, 2) for x in v]}" for k, v in times.items()) + ")")
    print(f"save: ours {med['ours_save']:.2f} s, baseline torch.save {med['base_save']:.2f} s, "
          f"ratio {med['ours_save'] / med['base_save']:.2f}x")
    print(f"load: ours {med['ours_load']:.2f} s, baseline torch.load {med['base_load']:.2f} s, "
          f"ratio {med['ours_load'] / med['base_load']:.2f}x")


if __name__ == "__main__":
    main()
