"""Queue pane: the stage queue with each entry's state, progress, ETA, device and memory estimate,
and the operations on it (add, remove, move, start, cancel, resume), all through engine.jobs.queue.

The table is rebuilt when queue.toml changes (the watcher says so) and its progress columns
are refreshed from the run store once a second while the pane is shown. Enter opens an entry's
detail (its whole message, run, mix history, exports and the tail of its trainer log); the line
under the table keeps the last operation's result, errors included, until the next one. The
title says whether a supervisor runs now (looked at every second, never remembered).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from engine.errors import FcError
from engine.jobs.protocol import EntryState, RunState
from fcwork.format import export_lines, fmt_eta, fmt_progress, mix_history_lines
from fcwork.messages import ShowRun
from fcwork.panes.base import Pane
from fcwork.widgets.colors import theme_color
from fcwork.widgets.modals import ConfirmScreen, PickScreen, TextScreen
from fcwork.widgets.row_table import RowTable
from fcwork.widgets.textline import PartsLine

REDRAW_S = 1.0
LOG_LINES = 15  # lines of trainer.log in an entry's detail


class QueueTable(RowTable):
    """The queue's table: enter (the table's own key, so the footer shows it) opens the entry's detail."""

    BINDINGS = [Binding("enter", "select_cursor", "Detail", key_display="\u23ce")]
DEVICES = ("auto", "cpu", "cuda", "mps")
STATE_COLORS = {EntryState.RUNNING: "success", EntryState.FAILED: "error", EntryState.CANCELLED: "warning",
                EntryState.DONE: "primary"}


def fmt_gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


@dataclass
class EntryInfo:
    """What the queue table shows of an entry besides the run's live progress."""

    device: str = "-"
    memory: str = "-"
    max_steps: int = 0


def entry_info(ws: Any, entry: Any, device: str, profiles: dict) -> EntryInfo:
    """Device and memory estimate of a queued stage (profile and tokenizer vocabulary from disk)."""
    from engine.model.info import guess_device, memory_estimate
    from engine.data.tokenizer import read_report
    from engine.jobs.runs import stage_image_domains

    key = entry.profile
    if key not in profiles:
        try:
            profiles[key] = ws.load_profile(key)
        except FcError as exc:
            profiles[key] = exc
    prof = profiles[key]
    if isinstance(prof, Exception):
        return EntryInfo(memory="profile?")
    try:
        st = prof.stage(entry.stage)
    except FcError:
        return EntryInfo(memory="stage?")
    dev = device if device != "auto" else (st.device if st.device != "auto" else guess_device())
    report = read_report(ws.tokenizer_path(prof.tokenizer_name).with_suffix(".json"))
    vocab = report.vocab_size if report else prof.tokenizer.vocab_size
    try:
        est = memory_estimate(st.model_config(vocab), st.seq_len, st.micro_batch, st.activation_checkpointing,
                              st.precision, dev, include_vision=bool(stage_image_domains(prof, st)),
                              devices=st.world_size, strategy=st.strategy, grad_accum=st.grad_accum)
        memory = fmt_gib(est["total"])
    except FcError:
        memory = "-"
    return EntryInfo(dev, memory, st.max_steps)


def stage_notes(st) -> str:
    """What the add picker says beyond model and steps: where a stage starts, SFT, LoRA."""
    notes = [f"from {st.init_from}"] if st.init_from else []
    notes += ["chat SFT"] if st.sft else []
    notes += [f"LoRA r{st.lora_rank}"] if st.lora_rank else []
    return "".join(f", {n}" for n in notes)


class QueuePane(Pane):
    """The workspace's stage queue."""

    TITLE = "Queue"
    # The footer shows the keys used most; `?` lists them all.
    BINDINGS = [
        Binding("enter", "detail", "Detail", tooltip="the entry's detail: whole message, run, mix history, "
                                                      "exports, trainer log"),
        Binding("a", "add", "Add", tooltip="add a stage of the profile to the queue"),
        Binding("s", "start", "Start", tooltip="start the supervisor, which runs the queue"),
        Binding("c", "cancel", "Cancel", tooltip="cancel the entry (a running one checkpoints first)"),
        Binding("r", "resume", "Resume", tooltip="queue a cancelled or failed entry again (starts the supervisor)"),
        Binding("x,delete", "remove", "Del", show=False, tooltip="remove the entry (asks first)"),
        Binding("K,shift+up", "move('up')", "Up", show=False, tooltip="move the entry up"),
        Binding("J,shift+down", "move('down')", "Down", show=False, tooltip="move the entry down"),
        Binding("v", "device", "Device", show=False, tooltip="the device the memory column estimates for"),
        Binding("m", "metrics", "Metrics", show=False, tooltip="show the entry's run in the Metrics pane"),
    ]
    HELP_KEYS = (("up / down", "choose an entry"), ("home / end", "the first / last entry"))

    class Described(Message):
        def __init__(self, infos: dict[int, EntryInfo], device: str) -> None:
            super().__init__()
            self.infos, self.device = infos, device

    class Done(Message):
        """A queue operation finished (or failed): what to say, and which entry to keep the cursor on."""

        def __init__(self, text: str, entry_id: int | None = None, error: bool = False) -> None:
            super().__init__()
            self.text, self.entry_id, self.error = text, entry_id, error

    class Supervisor(Message):
        """The supervisor's pid now (None: none runs)."""

        def __init__(self, pid: int | None) -> None:
            super().__init__()
            self.pid = pid

    class Detail(Message):
        """An entry's detail, read off the event loop."""

        def __init__(self, title: str, body: Text) -> None:
            super().__init__()
            self.title, self.body = title, body

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.entries: list = []
        self.infos: dict[int, EntryInfo] = {}
        self.device = "auto"
        self.error = ""
        self.supervisor: int | None | str = "?"  # pid, None (none runs) or "?" (not looked yet)
        self._keep_cursor: int | None = None
        self._message = ""

    def compose(self) -> ComposeResult:
        yield PartsLine(id="queue-title", classes="pane-title")
        table = QueueTable(id="queue-table")
        table.add_column("#", key="id")
        table.add_column("stage", key="stage")
        table.add_column("state", key="state")
        table.add_column("progress", key="progress")
        table.add_column("ETA", key="eta")
        table.add_column("device", key="device")
        table.add_column("memory", key="memory")
        table.add_column("message", key="message")
        yield table
        yield Static("", markup=False, id="queue-message")
        yield Static("", markup=False, id="queue-status")

    def on_mount(self) -> None:
        self.set_interval(REDRAW_S, self._tick)

    def _tick(self) -> None:
        if self.active:
            self.redraw()
            self.check_supervisor()

    def set_active(self, active: bool) -> None:
        super().set_active(active)
        if active:
            self.check_supervisor()  # at once, not a second later

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue-supervisor")
    def check_supervisor(self) -> None:
        from engine.jobs.procs import supervisor_pid

        self.post_message(self.Supervisor(supervisor_pid(self.ws)))

    def on_queue_pane_supervisor(self, event: QueuePane.Supervisor) -> None:
        if event.pid != self.supervisor:
            self.supervisor = event.pid
            self._title()

    def focus_main(self) -> None:
        self.query_one("#queue-table", DataTable).focus()

    # -- state from the app ------------------------------------------------------------------------

    def set_queue(self, entries: list | None, running_run: str | None, error: str = "") -> None:
        if entries is None:
            self.error = error
            self._title()
            return
        self.error = ""
        self.entries = list(entries)
        self._rebuild()
        self.describe(self.entries, self.device)

    def set_profile(self, profile: Any) -> None:
        super().set_profile(profile)
        self.describe(self.entries, self.device)

    def _title(self) -> None:
        counts = Counter(e.state for e in self.entries)
        parts = ", ".join(f"{n} {s}" for s, n in counts.items()) or "empty"
        if self.supervisor is None:
            sup = "no supervisor"
        elif isinstance(self.supervisor, int):
            sup = f"supervisor pid {self.supervisor}"
        else:
            sup = ""
        self.query_one("#queue-title", PartsLine).set([(f"Queue: {parts}", 0), (sup, 1),
                                                        (f"({self.error})" if self.error else "", 0)])

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue-describe")
    def describe(self, entries: list, device: str) -> None:
        profiles: dict = {}
        infos = {e.id: entry_info(self.ws, e, device, profiles) for e in entries}
        self.post_message(self.Described(infos, device))

    def on_queue_pane_described(self, event: QueuePane.Described) -> None:
        if event.device != self.device:
            return
        self.infos = event.infos
        self.redraw()

    def _rebuild(self) -> None:
        table = self.query_one("#queue-table", DataTable)
        current = self._keep_cursor if self._keep_cursor is not None else self.selected_id()
        self._keep_cursor = None
        table.clear()
        for e in self.entries:
            table.add_row(*self._cells(e), key=str(e.id))
        if current is not None:
            for row, e in enumerate(self.entries):
                if e.id == current:
                    table.move_cursor(row=row, animate=False)
        self._title()

    def _cells(self, e: Any) -> list:
        info = self.infos.get(e.id, EntryInfo())
        color = theme_color(self.app, STATE_COLORS.get(e.state, ""))
        state = Text(e.state, style=color)
        progress, eta, device = "-", "-", info.device
        if e.run_id:
            with self.store.lock:
                h = self.store.runs.get(e.run_id)
                if h is not None:
                    progress = fmt_progress(h.step, h.max_steps or info.max_steps)
                    if e.state == EntryState.RUNNING:
                        eta = fmt_eta(h.eta_seconds())  # tokens per step from the run's frozen stage
                    device = h.device or device
        elif info.max_steps:
            progress = fmt_progress(0, info.max_steps)
        stage = e.stage if (self.profile is None or e.profile == self.profile.name) else f"{e.profile}/{e.stage}"
        stage += f" from {e.init_from}" if e.init_from else ""
        return [str(e.id), Text(stage), state, progress, eta, device, info.memory, Text(e.message)]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_message()

    def _show_message(self) -> None:
        """The highlighted entry's whole message under the table (the column crops it; enter shows all)."""
        eid = self.selected_id()
        e = next((e for e in self.entries if e.id == eid), None)
        text = f"#{e.id} {e.stage}: {e.message or e.state}" if e is not None else ""
        if text != self._message:  # Static.update lays the screen out again: only when it changed
            self._message = text
            self.query_one("#queue-message", Static).update(Text(text, overflow="fold"))

    def redraw(self) -> None:
        self._show_message()
        table = self.query_one("#queue-table", DataTable)
        for e in self.entries:
            key = str(e.id)
            if key not in table.rows:
                continue
            for col, value in zip(("state", "progress", "eta", "device", "memory", "message"), self._cells(e)[2:]):
                table.update_cell(key, col, value, update_width=True)

    # -- actions -----------------------------------------------------------------------------------

    def selected_id(self) -> int | None:
        table = self.query_one("#queue-table", DataTable)
        if not self.entries or table.row_count == 0:
            return None
        row = table.cursor_row
        if 0 <= row < len(self.entries):
            return self.entries[row].id
        return None

    def _selected(self) -> Any:
        eid = self.selected_id()
        if eid is None:
            self.app.notify("The queue is empty", severity="warning")
            return None
        return next(e for e in self.entries if e.id == eid)

    def action_add(self) -> None:
        if self.profile is None:
            self.app.notify("No profile loaded", severity="error")
            return
        options = [(f"{self.profile.name} / {st.name}  ({st.model if isinstance(st.model, str) else 'custom'}, "
                    f"{st.max_steps} steps{stage_notes(st)})", st.name) for st in self.profile.stages]
        name = self.profile.name

        def picked(stage: str | None) -> None:
            if stage and self.profile.stage(stage).init_from:
                self.app.push_screen(PickScreen(f"Start {name} / {stage} from", self.start_options(stage)),
                                     lambda start: start is not None and self.run_op("add", name, stage, start))
            elif stage:
                self.run_op("add", name, stage)

        self.app.push_screen(PickScreen(f"Add a stage of {name} to the queue", options,
                                        empty=f"profile {name} has no stages"), picked)

    def start_options(self, stage: str) -> list[tuple[str, str]]:
        """Where a stage with init_from may start: the profile's init_from first (value ""), the
        profile's other stages (their latest finished run), then its finished runs, newest first."""
        default = self.profile.stage(stage).init_from
        options = [(f"{default}  (the profile's init_from: its latest finished run)", "")]
        options += [(f"{st.name}  (its latest finished run)", st.name) for st in self.profile.stages
                    if st.name not in (stage, default)]
        with self.store.lock:
            runs = [h for h in self.store.runs.values()
                    if h.profile == self.profile.name and h.state == RunState.FINISHED]
        options += [(f"run {h.run_id}  ({h.stage}, step {h.step})", h.run_id)
                    for h in sorted(runs, key=lambda h: h.run_id, reverse=True)]
        return options

    def action_remove(self) -> None:
        e = self._selected()
        if e is None:
            return
        self.app.push_screen(ConfirmScreen(f"Remove entry {e.id} ({e.stage}, {e.state}) from the queue?"),
                             lambda yes: yes and self.run_op("remove", e.id))

    def action_move(self, where: str) -> None:
        e = self._selected()
        if e is not None:
            self.run_op("move", e.id, where)

    def action_cancel(self) -> None:
        e = self._selected()
        if e is None:
            return
        what = "stop it (checkpoint first) and cancel it" if e.state == EntryState.RUNNING else "cancel it"
        self.app.push_screen(ConfirmScreen(f"Entry {e.id} ({e.stage}) is {e.state}: {what}?"),
                             lambda yes: yes and self.run_op("cancel", e.id))

    def action_resume(self) -> None:
        e = self._selected()
        if e is not None:
            self.run_op("resume", e.id)

    def action_start(self) -> None:
        self.run_op("start")

    def action_device(self) -> None:
        self.device = DEVICES[(DEVICES.index(self.device) + 1) % len(DEVICES)]
        self._title()
        self.describe(self.entries, self.device)

    def action_metrics(self) -> None:
        e = self._selected()
        if e is None:
            return
        if not e.run_id:
            self.app.notify(f"Entry {e.id} has no run yet", severity="warning")
            return
        self.post_message(ShowRun(e.run_id))

    def action_detail(self) -> None:
        e = self._selected()
        if e is not None:
            self.load_detail(e)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row (the table's own binding takes the key before the pane's)."""
        event.stop()
        self.action_detail()

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue-detail")
    def load_detail(self, e: Any) -> None:
        self.post_message(self.Detail(f"Entry {e.id}: {e.profile} / {e.stage}, {e.state}", entry_detail(self.ws, e)))

    def on_queue_pane_detail(self, event: QueuePane.Detail) -> None:
        self.app.push_screen(TextScreen(event.title, event.body, id="entry-detail"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue-op")
    def run_op(self, op: str, *args: Any) -> None:
        """One queue operation, off the event loop (it takes queue.lock and may spawn the supervisor).
        A refusal stays on the line under the table (a notification is gone in seconds)."""
        try:
            self._run_op(op, *args)
        except FcError as exc:
            self.post_message(self.Done(str(exc), args[0] if args and isinstance(args[0], int) else None, error=True))

    def _run_op(self, op: str, *args: Any) -> None:
        from engine.jobs.procs import supervisor_pid
        from engine.jobs.queue import StageQueue

        q = StageQueue(self.ws)
        if op == "add":
            e = q.add(*args)
            self.post_message(self.Done(f"Queued {e.stage} as entry {e.id}"
                                        + (f" (from {e.init_from})" if e.init_from else ""), e.id))
        elif op == "remove":
            e = q.remove(*args)
            self.post_message(self.Done(f"Removed entry {e.id} ({e.stage})"))
        elif op == "move":
            q.move(*args)
            self.post_message(self.Done("", args[0]))
        elif op == "cancel":
            e = q.cancel(*args)
            self.post_message(self.Done(f"Entry {e.id}: {e.message or e.state}", e.id))
        elif op == "resume":
            e = q.resume(*args)
            # As `s` does: an entry put back in the queue is of no use without a supervisor to run it.
            started = supervisor_pid(self.ws) is None
            if started:
                q.start()
            self.post_message(self.Done(f"Entry {e.id} queued again: {e.message}"
                                        + ("; started the supervisor" if started else ""), e.id))
        elif op == "start":
            running = supervisor_pid(self.ws) is not None
            q.start()
            self.post_message(self.Done("The supervisor was already running the queue" if running
                                        else "Started the supervisor: it runs the queue"))
        else:
            raise FcError(f"queue: unknown operation {op!r}")

    def on_queue_pane_done(self, event: QueuePane.Done) -> None:
        self._keep_cursor = event.entry_id
        if event.text:
            self.app.notify(event.text, severity="error" if event.error else "information")
            status = self.query_one("#queue-status", Static)
            status.update(event.text)
            status.set_class(event.error, "-error")
        self.check_supervisor()
        watcher = getattr(self.app, "watcher", None)
        if watcher is not None:
            watcher.poke()


def entry_detail(ws: Any, e: Any) -> Text:
    """An entry's detail as text: state and whole message, its run, progress, mix history, exports
    and the last lines of its trainer log (read from the run folder, so call it off the event loop)."""
    from engine.jobs.rundir import RunDir

    out = Text(overflow="fold")

    def section(title: str, lines: list[str]) -> None:
        out.append(f"{title}\n", style="bold")
        for line in lines:
            out.append(f"  {line}\n")

    section("message", [e.message or "-"])
    if not e.run_id:
        section("run", ["none yet: the supervisor makes one when it starts this entry"])
        section("passes over each domain (planned)", planned_passes(ws, e))
        return out
    run = RunDir(ws.runs_dir / e.run_id)
    section("run", [f"{e.run_id} (runs/{e.run_id}/ in the workspace)"])
    try:
        h = run.history()
    except (FcError, OSError) as exc:
        section("events", [f"unreadable: {exc}"])
        return out
    total = f"/{h.max_steps}" if h.max_steps else ""
    eta = f", ETA {fmt_eta(h.eta_seconds())}" if e.state == EntryState.RUNNING else ""
    section("progress", [f"{h.state or 'no events'} at step {h.step}{total}{eta}"
                         + (f", on {h.device}" if h.device else "")])
    if h.errors:
        section("errors", [str(ev.get("message", "")) for ev in list(h.errors)[-3:]])
    epochs = h.last.get("epochs") or {}
    section("passes over each domain so far", [", ".join(f"{d} {x:.2f}x" for d, x in epochs.items())] if epochs
            else planned_passes(ws, e))
    section("mix history", mix_history_lines(h.mixes) or ["none recorded yet"])
    ckpts = run.checkpoints()
    section("checkpoints", [", ".join(p.name for _, p in ckpts[-4:]) + (f" ({len(ckpts)} in all)" if len(ckpts) > 4
                                                                        else "") if ckpts else "none yet"])
    section("exports", export_lines(run.exports()) or ["none (Eval pane: x exports the latest checkpoint)"])
    try:
        with open(run.trainer_log, encoding="utf-8", errors="replace") as fh:
            tail = fh.read()[-20_000:].splitlines()[-LOG_LINES:]
    except OSError:
        tail = ["no trainer.log yet"]
    section(f"runs/{e.run_id}/trainer.log, last {LOG_LINES} lines", tail or ["empty"])
    return out


def planned_passes(ws: Any, e: Any) -> list[str]:
    """The passes the entry's stage will make over each domain, with a line per domain past the
    profile's warn_epochs (engine.data.epochs; reads shard headers, so call it off the event loop)."""
    from engine.data.epochs import epoch_warnings, format_passes, stage_passes

    try:
        prof = ws.load_profile(e.profile)
        rows = stage_passes(ws, prof, e.stage)
    except (FcError, OSError) as exc:
        return [f"unknown: {exc}"]
    return [format_passes(rows)] + epoch_warnings(prof, e.stage, rows)
