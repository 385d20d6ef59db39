"""The `fcwork` Textual app: five panes over the files of one workspace.

The app composes the panes, owns the workspace watcher (one thread that follows queue.toml,
the active profile and every run's events.jsonl) and hands what changed down to the panes.
Worker failures and watcher problems become notifications; nothing a user does kills it.
Neither torch nor sentencepiece is imported here: start-up stays well under a second.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Footer, TabbedContent, TabPane, Tabs
from textual.worker import Worker, WorkerState, get_current_worker

from engine.errors import FcError
from engine.jobs.history import RunStore
from engine.jobs.protocol import EntryState, Event
from engine.workspace import Workspace
from fcwork.keys import GLOBAL_KEYS, PANES, pane_class, pane_keys
from fcwork.messages import (ProfileChanged, QueueChanged, RunNotices, RunsChanged, ShowRun, WatchFailed,
                             WorkerFailed)
from fcwork.palette import WorkbenchCommands, pane_commands
from fcwork.panes.base import Pane
from fcwork.watch import POLL_S, WorkspaceWatcher
from fcwork.widgets.help_screen import HelpScreen
from fcwork.widgets.modals import ConfirmScreen
from fcwork.widgets.textline import TextLine

# Debugging/benchmark knob: exit right after the first paint (bench/tui_startup.py sets it).
EXIT_AFTER_PAINT_ENV = "FCWORK_TUI_EXIT_AFTER_PAINT"
# A running entry with no supervisor is taken up again by a new one, checked this often; set
# FCWORK_SUPERVISOR_RESTART=0 to leave that to `fcwork queue start`.
SUPERVISOR_CHECK_S = 5.0
RESTART_ENV = "FCWORK_SUPERVISOR_RESTART"
# Work of the app's own workers that dies with it (worker group -> what to call it when quitting).
IN_APP_JOBS = {"manifest-data": "the data build", "tok-train": "the tokenizer training", "eval": "the eval",
               "export": "the export"}
# Each pane's module (fcwork.keys.PANES) is imported when the pane mounts, so the first frame waits
# only for the pane it shows.


class PaneSlot(Widget):
    """Stands in for a hidden pane until the first frame is painted; `load()` imports and mounts it."""

    DEFAULT_CSS = "PaneSlot { display: none; }"

    def __init__(self, pane_id: str, make: Callable[[type[Pane]], Pane]) -> None:
        super().__init__()
        self.pane_id, self.make = pane_id, make

    async def load(self) -> None:
        if self.parent is not None:
            await self.parent.mount(self.make(pane_class(self.pane_id)), after=self)
            await self.remove()


def error_text(error: BaseException) -> str:
    """One line for a notification: our typed errors as they are, anything else with its type."""
    if isinstance(error, FcError):
        return str(error)
    return f"{type(error).__name__}: {error}".splitlines()[0]


class FcworkApp(App):
    """The workbench."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere find it too
    TITLE = "fcwork"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    VERTICAL_BREAKPOINTS = [(0, "-short"), (23, "-tall")]  # Screen.-short: 60x20 and such drop spacing
    BINDINGS = [
        # The tab labels show these keys ("F1 Manifest"), so the footer keeps its room for the pane's own.
        *[Binding(f"f{i}", f"pane('{p}')", PANES[p][0], show=False) for i, p in enumerate(PANES, 1)],
        *[Binding(str(i), f"pane('{p}')", PANES[p][0], show=False) for i, p in enumerate(PANES, 1)],
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "request_quit", "Quit"),
        Binding("ctrl+q", "request_quit", "Quit", priority=True, show=False),
    ]

    def __init__(self, workspace: str | os.PathLike | None = None, profile: str = "default",
                 poll_s: float = POLL_S, cursor_blink: bool = True, restart_supervisor: bool | None = None) -> None:
        super().__init__()
        self.ws = Workspace.open(workspace)
        self.profile_name = profile
        self.cursor_blink_inputs = cursor_blink
        self.store = RunStore()
        self.watcher = WorkspaceWatcher(self.ws, self.store, self.post_message, profile, poll_s)
        # The latest state from the watcher, handed to each pane as it mounts and as it changes.
        self.profile: Any = None
        self.entries: list | None = None
        self.queue_error = ""
        self.run_ids: list[str] = []
        self.active_pane = "manifest"
        self.restart_supervisor = (os.environ.get(RESTART_ENV, "1") != "0") if restart_supervisor is None \
            else restart_supervisor

    def compose(self) -> ComposeResult:
        yield TextLine(self._title(), id="title")
        with TabbedContent(id="tabs"):
            for i, (pane_id, (title, _, _)) in enumerate(PANES.items(), 1):
                with TabPane(f"F{i} {title}", id=f"tab-{pane_id}"):
                    make = partial(self._make_pane, pane_id)
                    # The hidden panes mount right after the first paint: a faster first frame.
                    yield make(pane_class(pane_id)) if pane_id == self.active_pane else PaneSlot(pane_id, make)
        yield Footer(compact=True, show_command_palette=False)  # ctrl+p is in `?`: the room is the pane's

    def _make_pane(self, pane_id: str, cls: type[Pane]) -> Pane:
        return cls(self.ws, self.store, id=pane_id)

    def _title(self) -> str:
        name = self.profile.name if self.profile is not None else self.profile_name
        return f"fcwork  profile {name}  workspace {self.ws.root.name}"  # a long folder name is cut last

    def notify(self, message: str, *, title: str = "", severity: str = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Notifications carry file names and `key[2].paths`: shown as plain text, not markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def on_mount(self) -> None:
        self.query_one(Tabs).can_focus = False  # tab moves between the pane's widgets; F1-F5 switch panes
        self.call_after_refresh(self._after_first_paint)

    async def _after_first_paint(self) -> None:
        """The first frame is on screen: now follow the files and mount the hidden panes."""
        if os.environ.get(EXIT_AFTER_PAINT_ENV):
            self.exit()
            return
        self.run_worker(self._watch, name="watcher", group="watch", thread=True, exit_on_error=False)
        if self.restart_supervisor:
            self.set_interval(SUPERVISOR_CHECK_S, self._check_supervisor)
        for slot in list(self.query(PaneSlot)):
            await slot.load()

    def _check_supervisor(self) -> None:
        if any(e.state == EntryState.RUNNING for e in self.entries or []):
            self.run_worker(self._restart_supervisor, name="supervisor check", group="supervisor-check",
                            thread=True, exclusive=True, exit_on_error=False)

    def _restart_supervisor(self) -> None:
        """An entry is marked running and no supervisor watches it (killed, or the Mac restarted):
        start one, which adopts the trainer or judges how it ended, and say so."""
        from engine.jobs.queue import StageQueue

        queue = StageQueue(self.ws)
        orphans = queue.orphans()
        if orphans:
            pid = queue.start()
            ids = ", ".join(f"#{e.id}" for e in orphans)
            self.call_from_thread(self.notify, f"Restarted the supervisor (pid {pid}): {ids} had none watching it",
                                  severity="warning", timeout=10)

    def _watch(self) -> None:
        worker = get_current_worker()
        self.watcher.run(lambda: worker.is_cancelled)

    def on_unmount(self) -> None:
        self.watcher.stop()

    @property
    def panes(self) -> dict[str, Pane]:
        """The mounted panes by id (a hidden pane mounts just after the first paint). One still
        composing its widgets is left out: it asks for the state so far once mounted (sync_pane)."""
        return {p.id: p for p in self.query(Pane) if p.id and p.is_mounted}

    def sync_pane(self, pane: Pane) -> None:
        """Give a pane that just mounted everything known so far (called from Pane.on_mount)."""
        if self.profile is not None:
            pane.set_profile(self.profile)
        if self.entries is not None or self.queue_error:
            pane.set_queue(self.entries if pane.id == "queue" else self.entries or [],
                           self.running_run(), self.queue_error)
        if self.run_ids:
            pane.set_runs(self.run_ids)
        if pane.id == self.active_pane:
            pane.set_active(True)
            pane.focus_main()

    # -- navigation --------------------------------------------------------------------------------

    def action_pane(self, pane_id: str) -> None:
        self.query_one(TabbedContent).active = f"tab-{pane_id}"
        pane = self.panes.get(pane_id)
        if pane is not None:
            pane.focus_main()

    async def run_pane_action(self, pane_id: str, action: str) -> None:
        """Run a pane's binding action from the command palette (switching to that pane first)."""
        self.action_pane(pane_id)
        pane = self.panes.get(pane_id)
        if pane is not None:
            await pane.run_action(action)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        title, _, _ = PANES.get(self.active_pane, ("", "", ""))
        sections = [(f"{title} pane", pane_keys(pane_class(self.active_pane)))] if title else []
        self.push_screen(HelpScreen(f"Keys of fcwork{f' ({title})' if title else ''}", sections + [
            ("Everywhere", GLOBAL_KEYS)]))

    def action_request_quit(self) -> None:
        """q and ctrl+q: ask first (a stray q must not close the app), then quit."""
        if isinstance(self.screen, ConfirmScreen) and self.screen.question.startswith("Quit fcwork?"):
            self.exit()  # pressed again on the question: that is a yes
            return
        jobs = sorted({IN_APP_JOBS[w.group] for w in self.workers if w.group in IN_APP_JOBS and w.is_running})
        question = "Quit fcwork? Queued stages keep training in the background; fcwork reattaches."
        if jobs:
            question += f" This stops {', '.join(jobs)}."
        self.push_screen(ConfirmScreen(question), lambda yes: self.exit() if yes else None)

    def action_help_quit(self) -> None:
        """ctrl+c (copy in a text box) elsewhere says how to quit, in plain words."""
        self.notify("Press q or ctrl+q to quit", title="Do you want to quit?")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.active_pane = event.pane.id.removeprefix("tab-") if event.pane and event.pane.id else ""
        for pane_id, pane in self.panes.items():
            pane.set_active(pane_id == self.active_pane)

    def palette_commands(self) -> list:
        cmds = pane_commands(self, {p: pane_class(p) for p in PANES})
        for path in sorted(self.ws.profiles_dir.glob("*.toml")):
            cmds.append((f"Open profile {path.stem}", str(path), partial(self.open_profile, path.stem)))
        return cmds

    def open_profile(self, name: str) -> None:
        self.profile_name = name
        self.watcher.set_profile(name)

    # -- state from the watcher, handed down -----------------------------------------------------

    def running_run(self) -> str | None:
        """The run of the running queue entry, else the newest run whose events say it runs."""
        running = [e.run_id for e in self.entries or [] if e.state == EntryState.RUNNING and e.run_id]
        return (running or self.store.running() or [None])[0]

    def on_queue_changed(self, msg: QueueChanged) -> None:
        if msg.entries is not None:
            self.entries, self.queue_error = msg.entries, ""
        else:
            self.queue_error = msg.error
            self.notify(msg.error, title="queue.toml", severity="error")
        running = self.running_run()
        for pane in self.panes.values():
            if pane.id == "queue":
                pane.set_queue(msg.entries, running, msg.error)
            else:
                pane.set_queue(self.entries or [], running)

    def on_profile_changed(self, msg: ProfileChanged) -> None:
        if msg.name != self.profile_name:
            return
        if msg.profile is None:
            self.notify(msg.error, title="profile", severity="error", timeout=10)
            return
        own = any([pane.expects_profile(msg.profile) for pane in self.panes.values()])
        reloaded = self.profile is not None and self.profile.name == msg.profile.name and not own
        self.profile = msg.profile
        self.query_one("#title", TextLine).set(self._title())
        for pane in self.panes.values():
            pane.set_profile(msg.profile)
        if reloaded:
            self.notify(f"Profile {msg.profile.name} reloaded from disk")

    def on_runs_changed(self, msg: RunsChanged) -> None:
        self.run_ids = msg.run_ids
        for pane in self.panes.values():
            pane.set_runs(msg.run_ids)

    def on_run_notices(self, msg: RunNotices) -> None:
        for pane in self.panes.values():
            pane.run_notices(msg.run_id, msg.events, msg.replay)
        if msg.replay:
            return
        if any(ev.get("type") == Event.STATUS for ev in msg.events):
            running = self.running_run()
            for pane in self.panes.values():
                if pane.id != "queue":
                    pane.set_queue(self.entries or [], running)
        for ev in msg.events:
            if ev.get("type") == Event.ERROR:
                self.notify(f"{msg.run_id}: {ev.get('message', '')}", title=f"{ev.get('source', 'trainer')} error",
                            severity="error", timeout=10)

    def on_show_run(self, msg: ShowRun) -> None:
        self.action_pane("metrics")
        metrics = self.panes.get("metrics")
        if metrics is not None:
            metrics.show_run(msg.run_id)  # type: ignore[attr-defined]

    # -- errors -------------------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.post_message(WorkerFailed(event.worker.name, event.worker.error))

    def on_worker_failed(self, msg: WorkerFailed) -> None:
        """The one place a failed worker becomes a readable message."""
        self.log.error(f"worker {msg.worker_name} failed", msg.error)
        self.notify(error_text(msg.error), title="error", severity="error", timeout=10)
        if msg.worker_name == "watcher":
            self.notify("Live updates stopped; restart fcwork to resume them", severity="warning")

    def on_watch_failed(self, msg: WatchFailed) -> None:
        self.notify(msg.error, severity="warning")


def run_app(workspace: str | None = None, profile: str = "default") -> int:
    """Entry point of `fcwork` with no subcommand."""
    try:
        app = FcworkApp(workspace, profile)
    except FcError as exc:
        print(f"fcwork: error: {exc}", file=sys.stderr)
        return 2
    app.run()
    return 0
