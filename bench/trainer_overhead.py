"""The trainer's step time with control-file watching and event writing on vs off.

Two real Trainers (engine.train.trainer) on the same run settings live side by side in this
process: "on" is the trainer as shipped (events.jsonl written and flushed every step, the requests
folder watched by the watchfiles thread and polled every step); "off" has an event sink that writes
nothing and a watcher that never looks. Blocks of steps alternate between the two (so load
changes on a shared machine hit both alike) through the trainer's own loop (`run_until`), with one
step event per step (log_every = 1, the worst case) and no evals or checkpoints. Prints the median
time per step of each, the overhead (median over back-to-back block pairs of on / off - 1; target
< 2%), the cost of one event write and one poll measured alone, and the device.

    flock /tmp/bench.lock .venv/bin/python bench/trainer_overhead.py [--blocks 30] [--block-steps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.jobs.events import EventWriter  # noqa: E402
from engine.jobs.rundir import RunDir  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402
from tests.train_fixtures import build_train_workspace, make_run  # noqa: E402


class NullEvents:
    """An event sink that keeps nothing (the "off" variant)."""

    def write(self, type: str, **fields) -> dict:
        return {"type": type, **fields}

    def close(self) -> None:
        pass


class NullWatcher:
    """A control watcher that never looks (the "off" variant)."""

    last_request_id = 0

    def poll(self):
        return None

    def close(self) -> None:
        pass


def make_trainer(tw, args, on: bool) -> tuple[Trainer, object]:
    """A set-up Trainer on its own run folder; "off" gets the null event sink and watcher."""
    model = asdict(PRESETS[args.preset].with_vocab(tw.vocab_size))
    run = make_run(tw, "short", model=model, seq_len=args.seq_len, micro_batch=args.micro_batch, grad_accum=1,
                   max_steps=10**7, warmup_steps=2, eval_every=0, checkpoint_every=10**9, log_every=1,
                   device=args.device, precision="auto", compile="off")
    events = EventWriter(run / "events.jsonl") if on else NullEvents()
    trainer = Trainer(run, events)
    trainer.setup()
    if not on:
        trainer.watcher.close()
        trainer.watcher = NullWatcher()
    return trainer, events


def timed_block(trainer: Trainer, steps: int) -> float:
    """Seconds per step over `steps` steps of the trainer's loop."""
    t0 = time.perf_counter()
    assert trainer.run_until(trainer.step + steps)
    return (time.perf_counter() - t0) / steps


def micro_costs(tw) -> tuple[float, float]:
    """Seconds per events.write of a step event, and per watcher poll with nothing new."""
    from engine.train.watch import ControlWatcher

    with tempfile.TemporaryDirectory() as d:
        fields = {"step": 1, "tokens": 1024, "loss": 3.21, "domain_loss": {"code": 3.1, "science": 3.3, "chess": 3.2},
                  "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 12345.6, "step_time": 0.05, "mem_bytes": 123456789,
                  "mix": {"code": 0.5, "science": 0.3, "chess": 0.2}}
        n = 2000
        with EventWriter(Path(d) / "events.jsonl") as w:
            t0 = time.perf_counter()
            for _ in range(n):
                w.write("step", **fields)
            per_event = (time.perf_counter() - t0) / n
        watcher = ControlWatcher(RunDir(d).requests_dir, ["code", "science", "chess"])
        watcher.poll()
        t0 = time.perf_counter()
        for _ in range(n):
            watcher.poll()
        per_poll = (time.perf_counter() - t0) / n
        watcher.close()
    return per_event, per_poll


def _quartiles(xs: list[float]) -> list[float]:
    q = statistics.quantiles(xs, n=4)
    return [round(q[0] * 1e3, 2), round(q[2] * 1e3, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=30, help="blocks per variant")
    ap.add_argument("--block-steps", type=int, default=5, help="optimizer steps per block")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    args = ap.parse_args()
    # One thread by default: on a shared machine, torch's thread pool waiting on busy cores adds
    # far more noise than the effect measured here. FCWORK_TRAIN_THREADS=N overrides.
    os.environ.setdefault("FCWORK_TRAIN_THREADS", "1")
    torch.set_num_threads(int(os.environ["FCWORK_TRAIN_THREADS"]))

    with tempfile.TemporaryDirectory(prefix="fcw-bench-overhead-") as d:
        tw = build_train_workspace(Path(d) / "ws")
        (t_on, ev_on), (t_off, ev_off) = make_trainer(tw, args, True), make_trainer(tw, args, False)
        on, off = [], []
        try:
            for trainer in (t_on, t_off):  # warm-up: allocator, first-call costs
                timed_block(trainer, args.block_steps)
            for b in range(args.blocks):
                for variant in ((True, False) if b % 2 == 0 else (False, True)):
                    (on if variant else off).append(timed_block(t_on if variant else t_off, args.block_steps))
        finally:
            for trainer, events in ((t_on, ev_on), (t_off, ev_off)):
                trainer.close()
                events.close()
        per_event, per_poll = micro_costs(tw)
    m_on, m_off = statistics.median(on), statistics.median(off)
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else args.device
    if device in ("auto", "cpu"):
        device = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    elif device == "cuda":
        device = torch.cuda.get_device_name()
    print(f"device: {device}, torch {torch.__version__}, python {platform.python_version()}")
    print(f"config: {args.preset} preset, seq_len {args.seq_len}, micro_batch {args.micro_batch}, "
          f"{args.blocks} blocks x {args.block_steps} steps per variant, interleaved, one step event per step")
    print(f"step time: on {m_on * 1e3:.2f} ms, off {m_off * 1e3:.2f} ms (medians of blocks; "
          f"quartiles on {_quartiles(on)}, off {_quartiles(off)} ms)")
    paired = statistics.median(a / b for a, b in zip(on, off))  # blocks b of on and off ran back to back
    print(f"overhead: {(paired - 1) * 100:+.2f}% (median of per-pair ratios on/off {paired:.4f}; "
          f"ratio of medians {m_on / m_off:.4f}; target < 2%)")
    print(f"per step: event write {per_event * 1e6:.1f} us + control poll {per_poll * 1e6:.2f} us "
          f"= {(per_event + per_poll) / m_off * 100:.3f}% of an 'off' step")


if __name__ == "__main__":
    main()
