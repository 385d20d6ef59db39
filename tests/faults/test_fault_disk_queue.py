"""Faults around the queue: a full disk under a training stage, and an invalid queue.toml while a
stage trains. Nothing is lost: the entry ends with the reason, the supervisor survives, and no
half-written checkpoint stays behind."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine.jobs.procs import ensure_supervisor, supervisor_pid
from engine.jobs.queue import StageQueue
from engine.jobs.rundir import RunDir
from engine.workspace import Workspace
from tests.queue_fixtures import events, kill_workspace_processes, needs_trainer, wait_for

IDLE = 1.0


def _entry(ws, entry_id):
    return StageQueue(ws).get(entry_id)


def _log(ws) -> str:
    path = ws.root / "supervisor.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _checkpoint_step(run_dir: Path) -> int:
    steps = [e["step"] for e in events(run_dir) if e.get("type") == "checkpoint"]
    return steps[-1] if steps else 0


@pytest.fixture
def small_disk(tiny_template, tmp_path, monkeypatch):
    """The tiny workspace copied onto a 64 MB tmpfs of its own (skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    root = mnt / "ws"
    shutil.copytree(tiny_template, root, symlinks=True)
    monkeypatch.setenv("FCWORK_WORKSPACE", str(root))
    monkeypatch.setenv("FCWORK_TRAIN_THREADS", "1")
    try:
        yield Workspace(root)
    finally:
        kill_workspace_processes(root)
        for _ in range(20):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)


def _fill(folder: Path, leave: int) -> Path:
    """Take all free space of `folder`'s filesystem but `leave` bytes."""
    filler = folder / "filler.bin"
    try:
        fh = open(filler, "wb", buffering=0)  # unbuffered: nothing left to flush into a full disk
    except OSError:  # full already
        return filler
    free = shutil.disk_usage(folder).free
    with fh:
        chunk = b"\0" * (1 << 20)
        left = max(free - leave, 0)
        while left > 0:
            n = min(left, len(chunk))
            try:
                fh.write(chunk[:n])
                fh.flush()
            except OSError:
                break
            left -= n
    return filler


@needs_trainer
def test_a_full_disk_fails_the_entry_with_one_line_and_leaves_no_temp_folder(small_disk):
    ws = small_disk
    entry = StageQueue(ws).add("tiny", "long")  # checkpoints every 20 steps, never finishes by itself
    ensure_supervisor(ws, idle_s=IDLE)
    run_id = wait_for(lambda: _entry(ws, entry.id).run_id, 60, "a run")
    run = RunDir(ws.runs_dir / run_id)
    first = wait_for(lambda: _checkpoint_step(run.path), 120, "the first checkpoint")
    _fill(ws.root.parent, leave=4 << 20)  # room for events and the queue, not for the margin
    failed = wait_for(lambda: _entry(ws, entry.id).state == "failed" and _entry(ws, entry.id), 120,
                      "the entry to fail", lambda: _log(ws)[-2000:])
    assert "no space left on" in failed.message and "for a checkpoint of" in failed.message, failed.message
    assert "(free: " in failed.message and "\n" not in failed.message
    assert failed.restarts == 0  # a full disk is not a crash to retry
    assert not [p for p in run.ckpt_dir.iterdir() if p.name.endswith(".tmp")]
    # The last good checkpoint is whole: the last one announced (another may have landed between
    # seeing the first and filling the disk).
    assert [s for s, _ in run.checkpoints()][-1] == _checkpoint_step(run.path) >= first
    assert "Traceback" not in _log(ws)


@needs_trainer
def test_supervisor_survives_a_queue_it_cannot_write_and_records_the_result_later(small_disk):
    ws = small_disk
    entry = StageQueue(ws).add("tiny", "long")
    ensure_supervisor(ws, idle_s=IDLE)
    run_id = wait_for(lambda: _entry(ws, entry.id).run_id, 60, "a run")
    run = RunDir(ws.runs_dir / run_id)
    wait_for(lambda: _checkpoint_step(run.path), 120, "the first checkpoint")
    filler = _fill(ws.root.parent, leave=0)
    # The trainer stops at its next checkpoint; queue.toml cannot take the result while the disk is full.
    wait_for(lambda: run.trainer_pid() is None, 120, "the trainer to end", lambda: _log(ws)[-2000:])
    time.sleep(3 * IDLE)
    assert supervisor_pid(ws) is not None, _log(ws)[-2000:]  # alive, holding the result
    filler.unlink()
    done = wait_for(lambda: _entry(ws, entry.id).state == "failed" and _entry(ws, entry.id), 120,
                    "the result to be recorded", lambda: _log(ws)[-2000:])
    assert done.message and "\n" not in done.message and done.restarts == 0  # no restart into a full disk
    assert not [p for p in run.ckpt_dir.iterdir() if p.name.endswith(".tmp")]
    assert "Traceback" not in _log(ws)


@needs_trainer
def test_an_invalid_queue_while_a_stage_trains_keeps_its_result(tiny_template, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    shutil.copytree(tiny_template, root, symlinks=True)
    monkeypatch.setenv("FCWORK_WORKSPACE", str(root))
    monkeypatch.setenv("FCWORK_TRAIN_THREADS", "1")
    ws = Workspace(root)
    try:
        entry = StageQueue(ws).add("tiny", "first")
        ensure_supervisor(ws, idle_s=IDLE)
        run_id = wait_for(lambda: _entry(ws, entry.id).run_id and _entry(ws, entry.id).pid, 60, "a trainer")
        run = RunDir(ws.runs_dir / _entry(ws, entry.id).run_id)
        good = ws.queue_path.read_text()
        ws.queue_path.write_text("[[entries]\nthis is not TOML")
        wait_for(lambda: run.state() == "finished" and run.trainer_pid() is None, 120, "the stage to finish")
        time.sleep(3 * IDLE)
        assert supervisor_pid(ws) is not None, _log(ws)[-2000:]  # waiting to record the result
        assert "cannot record done" in _log(ws)
        ws.queue_path.write_text(good)  # the user fixes the file (the entry still says running)
        done = wait_for(lambda: _entry(ws, entry.id).state == "done" and _entry(ws, entry.id), 60,
                        "the result to be recorded", lambda: _log(ws)[-2000:])
        assert done.message.startswith("finished at step 16") and run_id
        assert "recorded now that queue.toml is usable again" in _log(ws)
    finally:
        kill_workspace_processes(root)
