"""What every pane shares: the workspace, the run store, and the hooks the app calls with new state.

The app owns the watcher and hands each pane what changed (attributes down); panes ask the
app for things with messages (messages up). A pane redraws only while it is the active tab.
"""

from __future__ import annotations

from typing import Any, Callable

from textual.containers import Vertical
from textual.worker import Worker, WorkerState

from engine.workspace import Workspace
from fcwork.messages import WorkerFailed
from engine.jobs.history import RunStore


class Pane(Vertical):
    """Base of the five panes."""

    TITLE = ""
    # Keys the pane's widgets handle that are not its own bindings: (keys, what they do), for `?`.
    HELP_KEYS: tuple[tuple[str, str], ...] = ()

    def __init__(self, ws: Workspace, store: RunStore, **kw: Any) -> None:
        super().__init__(**kw)
        self.ws = ws
        self.store = store
        self.profile: Any = None  # engine.profile.Profile or None until loaded
        self.active = False
        self._proc: Any = None  # the job child running for this pane (run_job), ended with the pane

    def on_mount(self) -> None:
        """Ask the app for the state so far (subclasses' own on_mount run as well)."""
        sync = getattr(self.app, "sync_pane", None)
        if sync is not None:
            self.call_after_refresh(sync, self)

    # Hooks the app calls; each pane overrides what it needs.

    def set_profile(self, profile: Any) -> None:
        self.profile = profile

    def set_queue(self, entries: list, running_run: str | None, error: str = "") -> None:
        pass

    def expects_profile(self, profile: Any) -> bool:
        """Whether this profile on disk is the pane's own write (the app then does not call it a change
        made outside)."""
        return False

    def set_runs(self, run_ids: list[str]) -> None:
        pass

    def run_notices(self, run_id: str, events: list[dict], replay: bool) -> None:
        pass

    def set_active(self, active: bool) -> None:
        self.active = active
        if active:
            self.call_after_refresh(self.redraw)  # the tab shows at once, its data a frame later

    def redraw(self) -> None:
        """Bring what is drawn up to date with the store (called on the pane's timer and on demand)."""

    def redraw_shown(self) -> None:
        """The pane's timer: only the tab shown redraws."""
        if self.active:
            self.redraw()

    def focus_main(self) -> None:
        """Put the focus on the pane's main widget (so its bindings show in the footer)."""

    def run_job(self, job: str, arg: str, progress: Callable[[str, int, int], None]) -> dict:
        """`python -m fcwork.jobs JOB WORKSPACE ARG` in a child (call from a thread worker): its progress
        lines to `progress`, its result returned, its one-line error raised (fcwork.jobs.follow)."""
        from fcwork import jobs

        self._proc = jobs.spawn(job, self.ws.root, arg)
        try:
            return jobs.follow(self._proc, progress)
        finally:
            self._proc = None

    def on_unmount(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Worker state messages do not bubble: pass failures up to the app's one handler."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.post_message(WorkerFailed(event.worker.name, event.worker.error))
