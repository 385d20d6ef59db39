"""Two GPUs for real: fc450 at seq 2048 on 1 GPU (grad_accum 2) and on 2 GPUs with DDP and FSDP2
(grad_accum 1 each), the same global batches, each launched as the supervisor launches a trainer
(engine.jobs.procs.spawn_trainer: torchrun past one device). Prints the scaling and the loss
agreement; then kills one rank of a DDP run with SIGKILL after a checkpoint and starts the group again
as the supervisor does (the supervisor's restart itself is tested on CPU in tests/test_distributed.py),
comparing the resumed losses with the uninterrupted run's; then resumes the FSDP run's checkpoint on
one GPU and on the CPU. Phase `n1` runs the torchrun path with one process beside the plain one.

    python bench/dist_scaling.py [--steps 200] [--vocab 50000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tomli_w  # noqa: E402

from engine.compat import tomllib  # noqa: E402
from engine.jobs.procs import child_env, spawn_trainer, trainer_command  # noqa: E402
from train_mfu import make_run  # noqa: E402


def events(run: Path, kind: str | None = None) -> list[dict]:
    path = run / "events.jsonl"
    if not path.exists():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in out if kind is None or e.get("type") == kind]


def attempts(run: Path) -> list[dict[int, float]]:
    """Step losses of each trainer attempt (an attempt begins with its `starting` status)."""
    out: list[dict[int, float]] = []
    for e in events(run):
        if e["type"] == "status" and e["state"] == "starting":
            out.append({})
        elif e["type"] == "step" and out:
            out[-1][e["step"]] = e["loss"]
    return out


def train(run: Path, timeout: float = 900) -> int:
    proc = spawn_trainer(run)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def ranks(launcher: int) -> dict[int, int]:
    """{rank: pid} of torchrun's workers, from /proc."""
    children = []
    for task in Path(f"/proc/{launcher}/task").iterdir():
        children += (task / "children").read_text().split()
    out = {}
    for pid in map(int, children):
        env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        if "RANK" in env:
            out[int(env["RANK"])] = pid
    return out


def speed(run: Path, skip: int) -> float:
    """Tokens/s from the step events' times, past the first `skip` steps (compilation)."""
    steps = {e["step"]: e for e in events(run, "step")}
    first, last = skip, max(steps)
    return (steps[last]["tokens"] - steps[first]["tokens"]) / (steps[last]["time"] - steps[first]["time"])


def edit_stage(run: Path, **changes) -> None:
    doc = tomllib.loads((run / "stage.toml").read_text())
    doc["stage"].update(changes)
    (run / "stage.toml").write_text(tomli_w.dumps(doc))


def log_tail(run: Path) -> str:
    return (run / "trainer.log").read_text()[-2000:] if (run / "trainer.log").exists() else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=50000)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--skip", type=int, default=20, help="steps left out of the speed (compilation)")
    ap.add_argument("--phases", default="scale,kill,move")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU (gloo): checks the script, not speed")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    root = Path(tempfile.mkdtemp(prefix="fc-dist-"))
    base = {"model": "fc450", "seq_len": 2048, "micro_batch": args.micro_batch, "max_steps": args.steps,
            "warmup_steps": min(20, args.steps // 4), "lr": 6e-4, "schedule": "constant", "eval_every": 0,
            "checkpoint_every": args.steps,
            "device": "cuda", "precision": "bf16", "compile": "on", "log_every": 1}
    if args.smoke:
        base.update(model="tiny", seq_len=128, micro_batch=2, device="cpu", precision="fp32", compile="off")
    arms = {"gpu1": dict(grad_accum=2), "ddp2": dict(grad_accum=1, devices=2, strategy="ddp"),
            "fsdp2": dict(grad_accum=1, devices=2, strategy="fsdp")}
    phases = args.phases.split(",")
    result: dict = {}
    runs = {name: make_run(root, name, args.vocab, {**base, **arm}) for name, arm in arms.items()}
    if "scale" in phases:
        for name, run in runs.items():
            code = train(run)
            if code != 0:
                print(f"{name}: exit {code}\n{log_tail(run)}")
                return 1
        ref = attempts(runs["gpu1"])[0]
        one = speed(runs["gpu1"], args.skip)
        for name, run in runs.items():
            got = attempts(run)[0]
            diffs = [abs(got[s] - ref[s]) for s in ref]
            tps = speed(run, args.skip)
            result[name] = {"tokens_per_s": tps, "scaling": tps / one, "max_loss_diff": max(diffs),
                            "mean_loss_diff": sum(diffs) / len(diffs), "final_loss": got[max(got)]}
            print(f"{name:6s}: {tps:10,.0f} tok/s, {tps / one:.3f}x of 1 GPU; |loss - 1 GPU| max {max(diffs):.2e} "
                  f"mean {sum(diffs) / len(diffs):.2e} over {len(diffs)} steps; loss {ref[1]:.3f} -> {got[max(got)]:.4f}",
                  flush=True)
    if "n1" in phases:
        # The torchrun path with one process (`--nproc-per-node 1`), as a multi-node or scripted launch
        # would start it, against the plain `python -m engine.train` the supervisor uses for one device.
        n1 = {**base, **arms["gpu1"], "max_steps": min(args.steps, 40), "checkpoint_every": min(args.steps, 40)}
        plain, via = make_run(root, "n1-plain", args.vocab, n1), make_run(root, "n1-torchrun", args.vocab, n1)
        codes = [train(plain)]
        with open(via / "trainer.log", "ab") as log:
            cmd = trainer_command(via, 2)
            cmd[cmd.index("--nproc-per-node") + 1] = "1"
            codes.append(subprocess.run(cmd, cwd=via, env=child_env(), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, timeout=900).returncode)
        a, b = attempts(plain)[0], attempts(via)[0]
        diffs = [abs(a[s] - b[s]) for s in a]
        device = next(e["device"] for e in events(via, "status") if e.get("device"))
        result["n1"] = {"exit": codes, "max_loss_diff": max(diffs), "steps": len(diffs), "device": device}
        print(f"n1: plain exit {codes[0]}, torchrun --nproc-per-node 1 exit {codes[1]} (device {device!r}); "
              f"|loss diff| max {max(diffs):.2e} over {len(diffs)} steps; final {a[max(a)]:.4f} vs {b[max(b)]:.4f}",
              flush=True)
    if "kill" in phases:
        # A shorter run with a checkpoint at a quarter; the constant schedule gives it the lr of the
        # uninterrupted 2-GPU run at every step, so their losses compare step for step.
        half = args.steps // 4
        run = make_run(root, "ddp2-kill", args.vocab,
                       {**base, **arms["ddp2"], "max_steps": 2 * half, "checkpoint_every": half})
        proc = spawn_trainer(run)
        deadline = time.time() + 600
        while not any(e["step"] >= half for e in events(run, "checkpoint")):
            if proc.poll() is not None or time.time() > deadline:
                print(f"kill: the run ended before its checkpoint\n{log_tail(run)}")
                return 1
            time.sleep(0.5)
        target = half + max(1, min(5, half // 2))
        while max((e["step"] for e in events(run, "step")), default=0) < target and proc.poll() is None:
            time.sleep(0.2)
        pids = ranks(proc.pid)
        os.kill(pids[1], signal.SIGKILL)
        code = proc.wait(300)
        print(f"kill: rank 1 (pid {pids[1]}) killed at step ~{target}; torchrun exit {code}", flush=True)
        code = train(run)  # what the supervisor does next: the whole group again
        first, second = attempts(run)[0], attempts(run)[-1]
        ref = attempts(runs["ddp2"])[0] if "scale" in phases else first
        resumed = sorted(second)
        diffs = [abs(second[s] - ref[s]) for s in resumed if s in ref]
        result["kill"] = {"exit": code, "resumed_from": resumed[0] - 1, "max_diff_vs_uninterrupted": max(diffs),
                          "steps_compared": len(diffs)}
        print(f"kill: group restarted, exit {code}, resumed at step {resumed[0]}; |loss - uninterrupted| max "
              f"{max(diffs):.2e} over {len(diffs)} steps", flush=True)
    if "move" in phases:
        src = runs["fsdp2"]
        for where, changes in (("gpu", dict(devices=1, grad_accum=2, max_steps=args.steps + 5)),
                               ("cpu", dict(devices=1, grad_accum=1, micro_batch=1, seq_len=256, device="cpu",
                                            precision="fp32", compile="off", max_steps=args.steps + 1))):
            run = root / "runs" / f"fsdp2-on-{where}"
            shutil.copytree(src, run, ignore=shutil.ignore_patterns("trainer.lock"))
            edit_stage(run, **changes)
            code = train(run)
            got = attempts(run)[-1]
            ref = attempts(src)[0]
            first = min(got) if got else None
            line = f"move: the 2-GPU FSDP checkpoint (step {args.steps}) resumed on 1 {where.upper()}: exit {code}, " \
                   f"steps {first}..{max(got) if got else None}, loss {got.get(first)} (2 GPUs at step {args.steps}: " \
                   f"{ref[max(ref)]:.4f})"
            result[f"move_{where}"] = {"exit": code, "first_step": first, "loss": got.get(first)}
            print(line if code == 0 else f"{line}\n{log_tail(run)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
