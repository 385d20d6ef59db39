"""The trainer on CUDA: bf16 autocast, fused AdamW, torch.compile, MFU, probes, checkpoint resume, and a
vision stage (the tower compiled, images spliced in without a device sync).

Skipped where no CUDA device is present (CI); run on a GPU machine with `./fcw test tests/test_cuda.py`.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from tests.test_vision_train import vision_workspace  # noqa: E402,F401  (the fixture, shared)
from tests.train_fixtures import (  # noqa: E402
    events_of, kill, log_tail, make_run, run_trainer, start_trainer, step_losses, wait_for,
)

CUDA = dict(device="cuda", precision="auto", compile="auto")


@pytest.mark.parametrize("compile_mode", ["auto", "off"])
def test_cuda_run_trains_in_bf16_with_mfu(train_workspace, compile_mode):
    run = make_run(train_workspace, "short", max_steps=30, checkpoint_every=10, eval_every=15,
                   **{**CUDA, "compile": compile_mode})
    assert run_trainer(run, timeout=600, FCWORK_TRAIN_THREADS="0") == 0, log_tail(run)
    status = events_of(run, "status")
    assert status[-1]["state"] == "finished" and status[-1]["device"].startswith("cuda")
    steps = events_of(run, "step")
    assert all("mfu" in e and 0 < e["mfu"] < 1 for e in steps[1:]), steps[-1]
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.3
    assert steps[-1]["mem_bytes"] > 0
    log = (run / "trainer.log").read_text()
    assert "bf16" in log and ("compile on" in log) == (compile_mode == "auto")
    evals = events_of(run, "eval")  # the probes ran on the (compiled) model, eagerly, on the GPU
    assert [e["step"] for e in evals] == [15, 30], evals
    assert all("probes" in e and "probe_error" not in e for e in evals), evals


def test_cuda_resume_after_sigkill_continues_from_the_checkpoint(train_workspace):
    run = make_run(train_workspace, "short", max_steps=40, checkpoint_every=5, eval_every=0, **CUDA)
    proc = start_trainer(run, FCWORK_TRAIN_THREADS="0")
    try:
        wait_for(lambda: any(e["step"] >= 12 for e in events_of(run, "checkpoint")), timeout=300,
                 what="a checkpoint at step >= 12")
    finally:
        kill(proc)
    last_ckpt = max(e["step"] for e in events_of(run, "checkpoint"))
    assert run_trainer(run, timeout=600, FCWORK_TRAIN_THREADS="0") == 0, log_tail(run)
    losses = step_losses(run)
    assert sorted(losses) == list(range(1, 41))
    starts = [e for e in events_of(run, "status") if e["state"] == "running"]
    assert len(starts) == 2 and last_ckpt >= 10


def test_cuda_joint_stage_compiles_the_tower_trains_and_resumes(vision_workspace):
    """Images and text on the GPU in bf16, tower compiled: the same losses as eager (to bf16's noise),
    and a SIGKILL mid-stage resumes from the checkpoint to the same end."""
    over = dict(**CUDA, max_steps=8, checkpoint_every=4, eval_every=8)
    eager = make_run(vision_workspace, "joint", **{**over, "compile": "off"})
    assert run_trainer(eager, timeout=600, FCWORK_TRAIN_THREADS="0") == 0, log_tail(eager)
    run = make_run(vision_workspace, "joint", **over)
    proc = start_trainer(run, FCWORK_TRAIN_THREADS="0")
    try:
        wait_for(lambda: (run / "ckpt" / "step-4").exists(), timeout=400, what="checkpoint 4")
    finally:
        kill(proc)
    assert run_trainer(run, timeout=600, FCWORK_TRAIN_THREADS="0") == 0, log_tail(run)
    log = (run / "trainer.log").read_text()
    assert "bf16" in log and "compile on" in log, log[-2000:]
    status = events_of(run, "status")
    assert status[-1]["state"] == "finished" and status[-1]["device"].startswith("cuda")
    assert any("caption" in e["domain_loss"] for e in events_of(run, "step"))
    ours, ref = step_losses(run), step_losses(eager)
    assert sorted(ours) == list(range(1, 9)) == sorted(ref)
    assert all(abs(ours[k] - ref[k]) < 0.02 * ref[k] for k in ref), (ours, ref)
    assert events_of(run, "eval")[-1]["domain_loss"]["caption"] > 0
