"""What the queue and the detached supervisor cost over running the trainers by hand.

Same tiny profile, same stages, same machine: (a) baseline: a script creates each run and
runs `python -m engine.train RUN_DIR` one after the other; (b) ours: the stages are queued and
the supervisor runs them (spawn, wait, restart bookkeeping, queue.toml updates). Rounds
alternate so machine noise hits both alike. Also times one locked queue edit against an
unlocked plain rewrite of queue.toml. Prints the figures, the ratios and the device.

    flock /tmp/bench.lock .venv/bin/python bench/supervisor_overhead.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tomli_w  # noqa: E402

from engine.data.pipeline import prepare_data  # noqa: E402
from engine.jobs.queue import StageQueue, dumps_queue  # noqa: E402
from engine.jobs.runs import create_run  # noqa: E402
from engine.jobs.procs import child_env, ensure_supervisor, supervisor_pid, trainer_command  # noqa: E402
from engine.workspace import Workspace  # noqa: E402

STAGES = ("one", "two")


def profile_text(steps: int) -> str:
    stdlib = Path(os.__file__).parent
    stage = (f"model = {{ dim = 32, n_layers = 1, n_heads = 2, n_kv_heads = 1, ffn_dim = 64, max_seq_len = 64 }}\n"
             f"seq_len = 32\nmicro_batch = 4\nwarmup_steps = 2\nmax_steps = {steps}\ncheckpoint_every = {steps}\n"
             f"eval_every = 0\ndevice = \"cpu\"\nprecision = \"fp32\"\ncompile = \"off\"\n")
    return (f'[profile]\nname = "bench"\n[mix]\ncode = 0.5\nscience = 0.5\n[data]\ntarget_tokens = 40000\n'
            f'[tokenizer]\nvocab_size = 512\nthreads = 1\n'
            f'[[sources]]\nname = "json"\ndomain = "code"\nformat = "text"\npath = "{stdlib}/json/*.py"\n'
            f'[[sources]]\nname = "email"\ndomain = "science"\nformat = "text"\npath = "{stdlib}/email/*.py"\n'
            f'split = "paragraph"\n'
            + "".join(f'[[stages]]\nname = "{s}"\n{stage}' for s in STAGES))


def run_direct(ws: Workspace) -> float:
    prof = ws.load_profile("bench")
    t0 = time.perf_counter()
    for stage in STAGES:
        run_dir = Path(create_run(ws, prof, stage))
        with open(run_dir / "trainer.log", "ab") as log:
            rc = subprocess.run(trainer_command(run_dir), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=child_env(), cwd=run_dir).returncode
        if rc != 0:
            raise SystemExit(f"{run_dir}: trainer exited {rc}")
    return time.perf_counter() - t0


def run_supervised(ws: Workspace) -> float:
    q = StageQueue(ws)
    t0 = time.perf_counter()
    ids = [e.id for e in q.add_many("bench", list(STAGES))]
    ensure_supervisor(ws, idle_s=0.0)
    while True:
        states = {e.id: e.state for e in q.read() if e.id in ids}
        if all(s in ("done", "failed", "cancelled") for s in states.values()):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    if any(s != "done" for s in states.values()):
        raise SystemExit(f"supervised stages ended {states}; see {ws.root / 'supervisor.log'}")
    while supervisor_pid(ws) is not None:
        time.sleep(0.05)
    return elapsed


def queue_edit(ws: Workspace, n: int) -> tuple[float, float]:
    """Seconds per locked add (read, validate, fsync'd atomic write) vs per plain rewrite."""
    q = StageQueue(ws)
    t0 = time.perf_counter()
    for _ in range(n):
        q.add("bench", "one")
    ours = (time.perf_counter() - t0) / n
    entries = q.read()
    plain = ws.root / "plain.toml"
    t0 = time.perf_counter()
    for _ in range(n):
        plain.write_text(tomli_w.dumps({"entries": [e.to_dict() for e in entries]}))
    base = (time.perf_counter() - t0) / n
    assert dumps_queue(entries)
    return ours, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ws.init()
        (ws.profiles_dir / "bench.toml").write_text(profile_text(args.steps))
        prepare_data(ws, ws.load_profile("bench"))
        direct, supervised = [], []
        for _ in range(args.rounds):
            direct.append(run_direct(ws))
            supervised.append(run_supervised(ws))
        ours_edit, base_edit = queue_edit(ws, 50)
    d, s = statistics.median(direct), statistics.median(supervised)
    print(f"device: cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), python {platform.python_version()}")
    print(f"two stages of {args.steps} steps, median of {args.rounds} rounds")
    print(f"  direct trainers (baseline): {d:.2f} s")
    print(f"  queue + supervisor (ours):  {s:.2f} s")
    print(f"  ratio ours/baseline: {s / d:.3f}  (overhead {s - d:+.2f} s, {(s - d) / len(STAGES):+.2f} s per stage)")
    print(f"queue edit: locked add {ours_edit * 1e3:.2f} ms, plain rewrite {base_edit * 1e3:.2f} ms, "
          f"ratio {ours_edit / base_edit:.1f}")


if __name__ == "__main__":
    main()
