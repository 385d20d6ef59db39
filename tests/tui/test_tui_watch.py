"""The workspace watcher on real files: notifications (watchfiles) wake it at once, polling is the
fallback. The poll interval is set far above the deadlines, so only notifications can meet them."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from engine.workspace import Workspace
from fcwork import watch as watch_mod
from fcwork.messages import ProfileChanged, QueueChanged, RunNotices, RunsChanged
from engine.jobs.history import RunStore
from tui_fixtures import step_event

QUEUE_TOML = """[[entries]]
id = 1
profile = "default"
stage = "base"
state = "queued"
run_id = ""
restarts = 0
message = ""
added = 1.0
pid = 0
cancel_requested = false
"""


class Follow:
    """A WorkspaceWatcher running in its thread, its messages collected in a queue."""

    def __init__(self, ws: Workspace, poll_s: float, fs_events: bool) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.watcher = watch_mod.WorkspaceWatcher(ws, RunStore(), self.messages.put, "default", poll_s, fs_events)
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)
        self.thread.start()

    def wait_for(self, kind: type, timeout: float, test=lambda m: True):
        """The first message of `kind` passing `test` within `timeout` seconds, else None."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                m = self.messages.get(timeout=left)
            except queue.Empty:
                return None
            if isinstance(m, kind) and test(m):
                return m
        return None

    def drain(self) -> None:
        while not self.messages.empty():
            self.messages.get_nowait()

    def stop(self) -> None:
        self.watcher.stop()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws")
    w.init()
    return w


def test_notifications_bring_queue_profile_and_run_changes_at_once(ws, monkeypatch):
    monkeypatch.setattr(watch_mod, "FS_SAFETY_POLL_S", 60.0)
    f = Follow(ws, poll_s=60.0, fs_events=True)
    try:
        assert f.wait_for(ProfileChanged, 10) is not None  # the first pass
        deadline = time.monotonic() + 10
        while not f.watcher.fs_events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f.watcher.fs_events, "watchfiles delivered nothing on this file system"
        f.drain()

        ws.queue_path.write_text(QUEUE_TOML)
        m = f.wait_for(QueueChanged, 1.5)
        assert m is not None and [e.stage for e in m.entries] == ["base"]

        path = ws.profile_path("default")
        path.write_text(path.read_text().replace("vocab_size = 8000", "vocab_size = 4000"))
        # write_text truncates first: the watcher may read the file half-written (a ProfileChanged with
        # an error) before the notification of the finished write brings the new profile.
        m = f.wait_for(ProfileChanged, 1.5, lambda m: m.profile is not None)
        assert m is not None and m.profile.tokenizer.vocab_size == 4000

        run = ws.runs_dir / "20261126-000000-base"
        run.mkdir()
        (run / "stage.toml").write_text('[run]\nprofile = "default"\nstage = "base"\n[stage]\nmax_steps = 10\n')
        assert f.wait_for(RunsChanged, 1.5, lambda m: run.name in m.run_ids) is not None
        (run / "events.jsonl").write_text(json.dumps({"type": "status", "time": 1.0, "state": "running", "step": 0,
                                                     "max_steps": 10, "pid": 1, "device": "cpu"}) + "\n")
        assert f.wait_for(RunNotices, 1.5) is not None
        with open(run / "events.jsonl", "a") as fh:
            fh.write(json.dumps(step_event(1)) + "\n")
        deadline = time.monotonic() + 1.5
        while f.watcher.store.history(run.name).step < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert f.watcher.store.history(run.name).step == 1
    finally:
        f.stop()


def test_without_notifications_it_polls(ws):
    f = Follow(ws, poll_s=0.05, fs_events=False)
    try:
        assert f.wait_for(ProfileChanged, 10) is not None
        assert not f.watcher.fs_events
        ws.queue_path.write_text(QUEUE_TOML)
        m = f.wait_for(QueueChanged, 2, lambda m: m.entries)
        assert m is not None and [e.stage for e in m.entries] == ["base"]
    finally:
        f.stop()
