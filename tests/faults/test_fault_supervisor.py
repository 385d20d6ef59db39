"""A dead supervisor: every command that reads the queue says so, the workbench starts a new one by
itself (which adopts the trainer), and a run whose trainer died without a final status never reads
as running."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from engine.jobs.procs import ensure_supervisor, supervisor_pid
from engine.jobs.queue import QueueEntry, StageQueue
from engine.jobs.rundir import RunDir
from tests.conftest import REPO
from tests.queue_fixtures import events, needs_trainer, wait_for

IDLE = 1.0


def _cli(ws, *args):
    return subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws.root), *args],
                          capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL, timeout=120)


def _orphaned_queue(ws) -> None:
    from engine.jobs.queue import dumps_queue

    ws.queue_path.write_text(dumps_queue([QueueEntry(id=3, profile="default", stage="base", state="running",
                                                     run_id="20260101-000000-base", pid=0)]))


def test_queue_commands_say_when_a_running_entry_has_no_supervisor(workspace):
    _orphaned_queue(workspace)
    for args in (("queue", "list"), ("queue", "move", "3", "up")):
        out = _cli(workspace, *args)
        assert out.returncode == 0, out.stderr
        assert "warning: entry #3 (base) is marked running but no supervisor is watching it" in out.stderr
        assert "`fcwork queue start` takes it up again" in out.stderr
    assert StageQueue(workspace).orphans()[0].id == 3


def test_a_live_run_whose_trainer_is_gone_reads_as_crashed(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "stage.toml").write_text('[run]\nid = "r"\n[stage]\nmax_steps = 10\n')
    with run.writer() as w:
        w.write("status", state="running", step=0, max_steps=10, pid=1, device="cpu")
        w.write("step", step=4, loss=3.0)
    assert run.summary().status == "running"  # no trainer ever ran here (no lock file): as written
    run.trainer_lock.write_text("12345\n")  # a trainer ran and its lock is free now: it died
    s = run.summary()
    assert (s.status, s.step, s.message) == ("crashed", 4, "the trainer ended without a final status")


@needs_trainer
def test_the_workbench_restarts_a_killed_supervisor_which_adopts_the_trainer(tiny_ws, monkeypatch):
    import fcwork.app

    sys.path.insert(0, str(REPO / "tests" / "tui"))
    from tui_fixtures import make_app

    ws = tiny_ws
    entry = StageQueue(ws).add("tiny", "long")
    old = ensure_supervisor(ws, idle_s=IDLE)
    run_id = wait_for(lambda: StageQueue(ws).get(entry.id).pid and StageQueue(ws).get(entry.id).run_id, 90,
                      "the trainer")
    trainer = StageQueue(ws).get(entry.id).pid
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: supervisor_pid(ws) is None, 10, "the killed supervisor's lock to drop")
    monkeypatch.setattr(fcwork.app, "SUPERVISOR_CHECK_S", 0.2)

    async def scenario() -> int:
        app = make_app(ws, "tiny", restart_supervisor=True)
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(200):
                await pilot.pause(0.05)
                if supervisor_pid(ws) is not None:
                    break
            await pilot.pause(0.3)
            said = [n.message for n in app._notifications]
            assert any(f"#{entry.id} had none watching it" in m for m in said), said
            return supervisor_pid(ws)

    new = asyncio.run(scenario())
    assert new and new != old
    wait_for(lambda: "adopted" in StageQueue(ws).get(entry.id).message, 30, "the new supervisor to adopt the trainer")
    assert StageQueue(ws).get(entry.id).pid == trainer
    assert RunDir(ws.runs_dir / run_id).trainer_pid() == trainer
    wait_for(lambda: any(e.get("type") == "step" for e in events(ws.runs_dir / run_id)), 60, "the adopted trainer's steps")
