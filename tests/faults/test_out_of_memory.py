"""A stage that does not fit the device's memory is the user's to change, not a crash to retry:
the trainer recognises CUDA's and MPS's out-of-memory errors, exits with the user-error code, and
says what to change with the estimate `fcwork model info` gives. The errors are raised from torch's
attention while a tiny model trains in this process (no GPU here)."""

from __future__ import annotations

import pytest
import torch

from engine.jobs.protocol import EXIT_USER_ERROR
from engine.jobs.rundir import RunDir
from engine.model.info import memory_estimate
from engine.train.trainer import EXIT_CRASH
from tests.train_fixtures import events_of, make_run, train_here

CUDA_OOM = torch.OutOfMemoryError(
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.06 GiB is free.")
MPS_OOM = RuntimeError(
    "MPS backend out of memory (MPS allocated: 17.80 GB, other allocations: 1.23 GB, max allowed: 18.13 GB). Tried to "
    "allocate 256.00 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory "
    "allocations (may cause system failure).")


def _train_until_attention_raises(run, monkeypatch, exc: BaseException, after_calls: int = 8) -> int:
    real = torch.nn.functional.scaled_dot_product_attention
    calls = [0]

    def attention(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after_calls:  # a few steps in: the allocation that no longer fits
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)
    return train_here(run)


@pytest.mark.parametrize("exc", [CUDA_OOM, MPS_OOM], ids=["cuda", "mps"])
@pytest.mark.parametrize("micro_batch, checkpointing, tip", [
    (4, False, "try micro_batch = 2 or activation_checkpointing = true"),
    (1, True, "try a shorter seq_len or a smaller model"),
])
def test_out_of_memory_is_a_user_error_with_what_to_change(train_workspace, monkeypatch, exc, micro_batch,  # noqa: F811
                                                           checkpointing, tip):
    run = make_run(train_workspace, "code-only", micro_batch=micro_batch, activation_checkpointing=checkpointing)
    rc = _train_until_attention_raises(run, monkeypatch, exc)
    assert rc == EXIT_USER_ERROR  # the supervisor fails the entry; no restart
    spec = RunDir(run).spec()
    est = memory_estimate(spec.model, 32, micro_batch, checkpointing, "fp32", "cpu")
    expected = (f"out of memory at micro-batch {micro_batch}: {tip} (`fcwork model info` estimates "
                f"{est['total'] / 2**30:,.2f} GiB for this stage on cpu, fp32)")
    assert [e["message"] for e in events_of(run, "error")] == [expected]
    final = events_of(run, "status")[-1]
    assert final["state"] == "failed" and final["message"] == expected
    log = (run / "trainer.log").read_text()
    assert f"ERROR {expected} [{str(exc).splitlines()[0]}]" in log and "Traceback" not in log


def test_another_runtime_error_is_still_a_crash(train_workspace, monkeypatch):  # noqa: F811
    run = make_run(train_workspace, "code-only")
    rc = _train_until_attention_raises(run, monkeypatch, RuntimeError("expected scalar type Float but found Half"))
    assert rc == EXIT_CRASH
    assert events_of(run, "error")[-1]["message"] == "RuntimeError: expected scalar type Float but found Half"
