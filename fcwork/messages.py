"""App-wide messages: what the workspace watcher reports and what panes ask of the app."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class QueueChanged(Message):
    """queue.toml was (re)read: its entries, or the one-line error that stopped the read."""

    def __init__(self, entries: list | None, error: str = "") -> None:
        super().__init__()
        self.entries = entries
        self.error = error


class ProfileChanged(Message):
    """The active profile file was (re)loaded; `profile` is None when it failed with `error`."""

    def __init__(self, name: str, profile: Any, error: str = "") -> None:
        super().__init__()
        self.name = name
        self.profile = profile
        self.error = error


class RunsChanged(Message):
    """The set of run folders changed (newest first)."""

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = run_ids


class RunNotices(Message):
    """Events of one run worth reacting to (status, mix acks, errors, evals), batched per read."""

    def __init__(self, run_id: str, events: list[dict], replay: bool) -> None:
        super().__init__()
        self.run_id = run_id
        self.events = events
        self.replay = replay  # read while catching up on history, not live


class ShowRun(Message):
    """A pane asks to show one run's metrics."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class WatchFailed(Message):
    """The watcher could not read something it follows (said once per distinct problem)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class WorkerFailed(Message):
    """A pane's worker raised; the app turns it into one error notification."""

    def __init__(self, worker_name: str, error: BaseException) -> None:
        super().__init__()
        self.worker_name = worker_name
        self.error = error
