"""Exact resume: a run killed with SIGKILL at random moments (one of them mid-checkpoint) and stopped
with SIGTERM, restarted each time with the same command, ends with the same per-step losses, held-out
losses and final weights, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import os
import random
import signal

import pytest

from engine.train.checkpoint import WRITE_DELAY_ENV
from tests.train_fixtures import (
    events_of, kill, log_tail, make_run, start_trainer, step_losses, train_here, wait_for,
)

STAGE = dict(max_steps=40, checkpoint_every=5, eval_every=10, keep_checkpoints=2, micro_batch=8)


def _eval_losses(run_dir):
    return {e["step"]: (e["loss"], e["domain_loss"]) for e in events_of(run_dir, "eval")}


def _last_step(run_dir) -> int:
    return max(step_losses(run_dir), default=0)


def _final_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "ckpt" / f"step-{STAGE['max_steps']}" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(train_workspace):
    """The uninterrupted run (in this process: same code, same single CPU thread)."""
    run = make_run(train_workspace, "short", **STAGE)
    assert train_here(run) == 0, log_tail(run)
    return run


def test_killed_stopped_and_resumed_run_is_bit_identical(train_workspace, reference):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    why = f"(random seed {seed})"
    run = make_run(train_workspace, "short", **STAGE)

    # 1. SIGKILL at a random step.
    proc = start_trainer(run)
    target = rng.randint(2, 18)
    wait_for(lambda: _last_step(run) >= target, 90, f"step {target}")
    kill(proc)
    assert proc.returncode == -signal.SIGKILL, why
    killed_at = _last_step(run)
    assert killed_at < STAGE["max_steps"], why

    # 2. SIGKILL while a checkpoint is being written (the debugging knob holds the write open).
    proc = start_trainer(run, **{WRITE_DELAY_ENV: "3"})
    ckpt_root = run / "ckpt"
    # The kill above may have hit a checkpoint write too: its temp folder is gone once this trainer
    # says it runs (it clears them first), so only this trainer's write counts below.
    wait_for(lambda: [s["state"] for s in events_of(run, "status")].count("running") == 2, 90, "the second start")

    def partial_checkpoint():
        return [p for p in ckpt_root.glob(".step-*.tmp") if (p / "model.safetensors").exists()]

    partial = wait_for(partial_checkpoint, 90, "a checkpoint write in progress")
    kill(proc)
    assert proc.returncode == -signal.SIGKILL, why
    assert partial[0].exists() and not (partial[0] / "state.json").exists()
    half_step = int(partial[0].name.split("-")[1].split(".")[0])
    assert not (ckpt_root / f"step-{half_step}").exists()

    # 3. SIGTERM at a random later step: checkpoint, status stopped, exit 0.
    proc = start_trainer(run)
    target = rng.randint(half_step + 1, STAGE["max_steps"] - 6)
    wait_for(lambda: _last_step(run) >= target, 90, f"step {target}")
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log_tail(run)
    assert not list(ckpt_root.glob(".step-*.tmp")), "the restart removes a half-written checkpoint"
    statuses = events_of(run, "status")
    assert [s["state"] for s in statuses[-2:]] == ["stopping", "stopped"]
    stopped_at = statuses[-1]["step"]
    assert "SIGTERM" in statuses[-1]["message"]
    assert (ckpt_root / f"step-{stopped_at}" / "state.json").exists()
    assert events_of(run, "checkpoint")[-1]["step"] == stopped_at

    # 4. Again (in this process, to spare a torch start-up): resumes and finishes.
    assert train_here(run) == 0, log_tail(run)
    running = [s for s in events_of(run, "status") if s["state"] == "running"]
    assert [s["message"] for s in running][-1] == f"resumed from step-{stopped_at}"
    assert len(running) == 4

    assert step_losses(run) == step_losses(reference), why
    assert _eval_losses(run) == _eval_losses(reference), why
    import torch

    mine, theirs = _final_weights(run), _final_weights(reference)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), why
    assert sorted(p.name for p in ckpt_root.iterdir()) == ["step-35", "step-40"]


def test_rerunning_a_finished_run_changes_nothing(train_workspace, reference):
    before = step_losses(reference)
    assert train_here(reference) == 0
    assert step_losses(reference) == before
    statuses = events_of(reference, "status")
    assert statuses[-1]["state"] == "finished" and statuses[-1]["step"] == STAGE["max_steps"]
