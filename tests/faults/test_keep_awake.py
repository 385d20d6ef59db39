"""macOS idle sleep would stall a stage trained over SSH: the supervisor holds a power assertion
(`caffeinate -i -w TRAINER_PID`) from the moment it spawns or adopts a trainer, and ends it when it
exits. No Mac here: sys.platform is faked and a fake caffeinate is put on PATH."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from engine.jobs import procs
from engine.jobs.rundir import RunDir
from tests.faults.fault_fixtures import caffeinate_starts, make_run, run_supervisor_here, start_fake_trainer
from tests.queue_fixtures import pid_alive, wait_for


def test_the_assertion_lasts_as_long_as_the_trainer(fake_mac):  # noqa: F811
    trainer = subprocess.Popen(["sleep", "60"])
    awake = procs.KeepAwake()
    try:
        awake.hold(trainer.pid)
        awake.hold(trainer.pid)  # the same trainer: the same assertion
        (pid, args), = wait_for(lambda: caffeinate_starts(fake_mac), 10, "caffeinate to start")
        assert args == ["-i", "-w", str(trainer.pid)] and pid == awake.proc.pid
        trainer.kill()
        trainer.wait()
        wait_for(lambda: awake.proc.poll() is not None, 10, "caffeinate to end with the trainer")
    finally:
        trainer.kill()
        awake.release()
    assert awake.proc is None


def test_nothing_happens_off_the_mac_or_without_caffeinate(fake_mac, monkeypatch, tmp_path):  # noqa: F811
    trainer = subprocess.Popen(["sleep", "60"])
    try:
        monkeypatch.setattr("sys.platform", "linux")
        awake = procs.KeepAwake()
        awake.hold(trainer.pid)
        assert awake.proc is None
        monkeypatch.setattr("sys.platform", "darwin")
        monkeypatch.setenv("PATH", str(tmp_path))  # a Mac without caffeinate: train anyway
        awake.hold(trainer.pid)
        assert awake.proc is None
        awake.release()
    finally:
        trainer.kill()
        trainer.wait()
    assert caffeinate_starts(fake_mac) == []


def test_the_supervisor_holds_it_for_the_trainer_it_spawns(trainer_ws, fake_mac, monkeypatch):  # noqa: F811
    from engine.jobs.queue import StageQueue

    monkeypatch.setenv("FAKE_CAFFEINATE_LINGER", "1")  # outlives the trainer: only the supervisor ends it
    ws, _ = trainer_ws
    entry = StageQueue(ws).add("trainfx", "code-only")
    run_supervisor_here(ws)
    done = StageQueue(ws).get(entry.id)
    assert done.state == "done", done
    trainer = next(e["pid"] for e in RunDir(ws.runs_dir / done.run_id).read_events()[0] if e["type"] == "status")
    (pid, args), = caffeinate_starts(fake_mac)
    assert args == ["-i", "-w", str(trainer)]
    assert not pid_alive(pid)  # ended when the supervisor went idle and exited


def test_the_supervisor_holds_it_for_a_trainer_it_adopts(trainer_ws, fake_mac):  # noqa: F811
    from engine.jobs.queue import StageQueue

    ws, profile = trainer_ws
    run = make_run(ws, profile, "short", max_restarts=0)
    fake = start_fake_trainer(run, "")
    queue = StageQueue(ws)
    entry = queue.add("trainfx", "short")
    queue.update(entry.id, state="running", run_id=run.name, pid=fake.pid, message="training")

    def end_the_trainer_once_held() -> None:
        deadline = time.monotonic() + 30
        while not caffeinate_starts(fake_mac) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(fake.pid, signal.SIGKILL)  # in any case, or the supervisor would wait on it for ever
        fake.wait()

    killer = threading.Thread(target=end_the_trainer_once_held)
    killer.start()
    try:
        run_supervisor_here(ws)
    finally:
        killer.join()
    (pid, args), = caffeinate_starts(fake_mac)
    assert args == ["-i", "-w", str(fake.pid)] and not pid_alive(pid)
    assert queue.get(entry.id).state == "failed"  # it died without a final status; no restarts allowed
