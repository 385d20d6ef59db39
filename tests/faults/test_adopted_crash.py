"""How the supervisor words the end of a trainer it did not spawn (adopted after a supervisor
restart): a real error from its log (an ERROR line, a traceback's exception), else "trainer ended
without a final status"; never the last INFO line, which says nothing of why it ended."""

from __future__ import annotations

import os
import signal

import pytest

from engine.jobs import procs
from tests.faults.fault_fixtures import make_run, start_fake_trainer
from tests.queue_fixtures import wait_for

START = f"{procs.TRAINER_START_MARK} 2030-01-01 00:00:00 ===\n"
INFO_ONLY = (START + "2030-01-01 00:00:01,000 trainer[7] INFO run x: stage short, 10 params\n"
             "2030-01-01 00:00:02,000 trainer[7] INFO checkpoint step-10\n")
TRACEBACK = (START + "2030-01-01 00:00:01,000 trainer[7] INFO checkpoint step-10\n"
             "2030-01-01 00:00:02,000 trainer[7] ERROR crash:\n"
             "Traceback (most recent call last):\n"
             '  File "trainer.py", line 1, in <module>\n'
             "    step()\n"
             "OSError: [Errno 5] Input/output error: 'shard.bin'\n")


@pytest.mark.parametrize("log, reason", [
    ("", ""),
    (INFO_ONLY, ""),
    (INFO_ONLY + "2030-01-01 00:00:03,000 trainer[7] ERROR cannot read control request 3\n",
     "cannot read control request 3"),
    (INFO_ONLY + "2030-01-01 00:00:03,000 trainer[7] WARNING probes failed with ERROR 5\n", ""),
    (TRACEBACK, "OSError: [Errno 5] Input/output error: 'shard.bin'"),
    (TRACEBACK + INFO_ONLY, ""),  # an error of an earlier attempt is not this one's
    (TRACEBACK.replace("OSError", "ValueError: first") + "\nDuring handling of the above exception, another "
     "exception occurred:\n\nTraceback (most recent call last):\n  File \"x.py\", line 2\nKeyError: 'step'\n",
     "KeyError: 'step'"),
])
def test_error_line(tmp_path, log, reason):
    path = tmp_path / "trainer.log"
    path.write_text(log)
    assert procs.error_line(path) == reason
    assert procs.error_line(tmp_path / "missing.log") == ""


def test_an_adopted_trainer_that_dies_is_not_judged_by_its_info_line(trainer_ws):  # noqa: F811
    from engine.jobs.queue import StageQueue

    ws, profile = trainer_ws
    run = make_run(ws, profile, "short", max_restarts=0)
    fake = start_fake_trainer(run, INFO_ONLY)
    queue = StageQueue(ws)
    entry = queue.add("trainfx", "short")
    queue.update(entry.id, state="running", run_id=run.name, pid=fake.pid, message="training")  # as a dead supervisor left it
    procs.ensure_supervisor(ws, idle_s=1.0)
    log_tail = lambda: (ws.root / procs.SUPERVISOR_LOG).read_text()[-2000:]  # noqa: E731
    wait_for(lambda: "adopted" in queue.get(entry.id).message, 30, "the supervisor to adopt the trainer", log_tail)
    os.kill(fake.pid, signal.SIGKILL)
    fake.wait()
    done = wait_for(lambda: (e := queue.get(entry.id)).state == "failed" and e, 30, "the entry to fail", log_tail)
    assert done.message == "crashed with no restarts allowed: trainer ended without a final status", done.message
    from engine.jobs.rundir import RunDir

    history = RunDir(run).summary()
    assert history.state == "failed" and "INFO" not in history.message and "step-10" not in history.message
