"""Past one GPU, on a machine with two: the same stage on 1 GPU (grad_accum 2) and on 2 GPUs with
DDP and FSDP (grad_accum 1 each) through the real queue path (`fcwork train`), then the largest
step-loss difference against the 1-GPU run and each run's tokens/s. The sequences are the same by
construction, so the losses differ only by bf16 and reduction order.

    python bench/dist_gpu_check.py [--workspace DIR] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = """
[[stages]]
name = "{name}"
model = "stage0"
seq_len = 512
micro_batch = 8
grad_accum = {accum}
devices = {devices}
strategy = "{strategy}"
max_steps = {steps}
warmup_steps = 5
checkpoint_every = {steps}
eval_every = 0
device = "cuda"
precision = "bf16"
compile = "off"
"""


def fcwork(ws: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws), *args], check=True, cwd=REPO,
                   stdin=subprocess.DEVNULL)


def steps(run: Path) -> dict[int, dict]:
    out = {}
    for line in (run / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("type") == "step":
            out[ev["step"]] = ev
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", default="/tmp/fcwork-dist")
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    ws = Path(args.workspace)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    fcwork(ws, "data", "prepare", "default")
    profile = ws / "profiles" / "default.toml"
    text = profile.read_text()
    arms = [("gpu1", 2, 1, "ddp"), ("ddp2", 1, 2, "ddp"), ("fsdp2", 1, 2, "fsdp")]
    for name, accum, devices, strategy in arms:
        if f'name = "{name}"' not in text:
            text += STAGE.format(name=name, accum=accum, devices=devices, strategy=strategy, steps=args.steps)
    profile.write_text(text)
    runs = {}
    for name, *_ in arms:
        fcwork(ws, "train", "default", name)
        runs[name] = sorted((ws / "runs").glob(f"*-{name}"))[-1]
    ref = steps(runs["gpu1"])
    for name, run in runs.items():
        got = steps(run)
        diff = max(abs(got[s]["loss"] - ref[s]["loss"]) for s in ref)
        tps = sorted(e["tokens_per_s"] for s, e in got.items() if s > 5)
        print(f"{name}: {len(got)} steps, max |loss - gpu1| {diff:.2e}, final loss {got[max(got)]['loss']:.4f}, "
              f"median {tps[len(tps) // 2]:,.0f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
