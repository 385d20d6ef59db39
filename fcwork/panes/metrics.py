"""Metrics pane: one run's loss curves (total, per domain, held-out), tokens/s, lr, grad norm,
memory, MFU and the mix history on the same step axis, live; under the mix, the latest mix
suggestion of the stage's policy with its reasons (`a` accepts it).

The watcher thread folds events into the run store; this pane copies what it draws out of the
store on a 3 Hz timer, and only while it is the active tab and the run changed. Per-domain loss
is drawn as an exponential moving average over its raw values (faint); each number under the
plot keeps its value at any width (its label shortens first) above a sparkline and its scale.
"""

from __future__ import annotations

from typing import Any

from textual.css.query import NoMatches
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal

from engine.jobs.protocol import Event, RunState
from engine.jobs.rundir import RunDir
from fcwork.format import fmt_eta, fmt_number, suggestion_lines
from fcwork.panes.base import Pane
from fcwork.widgets.modals import PickScreen
from fcwork.widgets.plot import PALETTE, Line, LinePlot, MixStrips, smooth
from fcwork.widgets.stat import Stat
from fcwork.widgets.textline import PartsLine, TextLine

REDRAW_S = 1 / 3
VIEWS = ("total", "domains", "held-out")
# (series, labels longest first: a narrow stat shows a shorter one, its value always)
STATS = (("tokens_per_s", ("tokens/s", "tok/s")), ("lr", ("lr",)), ("grad_norm", ("grad norm", "grad")),
         ("mem_bytes", ("memory", "mem")), ("mfu", ("MFU",)))
SPARK_POINTS = 200


def run_label(h: Any) -> str:
    total = f"/{h.max_steps}" if h.max_steps else ""
    return f"{h.run_id}  {h.profile}/{h.stage}  {h.state or 'no events'}  step {h.step}{total}"


def title_parts(h: Any, follow: bool) -> list[tuple[str, int]]:
    """The title line's parts with their rank (0 is dropped last): step and ETA outlive the rest."""
    total = f"/{h.max_steps}" if h.max_steps else ""
    running = h.state == RunState.RUNNING
    return [("following" if follow else "", 6), (h.run_id, 3), (f"{h.profile}/{h.stage}", 5),
            (h.state or "no events", 2), (f"step {h.step}{total}", 0),
            (f"ETA {fmt_eta(h.eta_seconds())}" if running else "", 1), (h.device or "", 4),
            (f"{len(h.errors)} error(s)" if h.errors else "", 1)]


class MetricsPane(Pane):
    """Live curves of one run."""

    TITLE = "Metrics"
    can_focus = True
    BINDINGS = [
        Binding("r", "choose_run", "Run", tooltip="choose the run to show"),
        Binding("f", "follow", "Follow", tooltip="follow the running stage (the default)"),
        Binding("l", "view", "Loss view", tooltip="loss shown: total, per domain (smoothed), held-out per domain"),
        Binding("a", "accept_suggestion", "Accept mix",
                tooltip="accept the mix suggested under the strips (sent to the trainer as a Manifest mix edit is)"),
    ]

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.run_id: str | None = None
        self.follow = True  # show the running stage until a run is chosen by hand
        self.view = "total"
        self._drawn: tuple | None = None

    def compose(self) -> ComposeResult:
        title = PartsLine(id="metrics-title", classes="pane-title")
        title.set([("no runs yet", 0)])
        yield title
        yield LinePlot("loss", empty="no steps yet", id="loss-plot")
        yield MixStrips(id="mix-strips")
        yield TextLine(id="suggestion")
        yield TextLine(id="suggestion-why")
        with Horizontal(id="stats"):
            for key, labels in STATS:
                yield Stat(labels, id=f"stat-{key}")

    def on_mount(self) -> None:
        self.set_interval(REDRAW_S, self.redraw_shown)

    def focus_main(self) -> None:
        self.focus()

    # -- choosing the run --------------------------------------------------------------------------

    def set_runs(self, run_ids: list[str]) -> None:
        if self.run_id is None and run_ids:
            self._pick_default()

    def set_queue(self, entries: list, running_run: str | None, error: str = "") -> None:
        if self.follow and running_run and running_run != self.run_id:
            self.show_run(running_run, follow=True)

    def run_notices(self, run_id: str, events: list[dict], replay: bool) -> None:
        if self.follow and run_id != self.run_id and not replay and any(
                e.get("type") == Event.STATUS and e.get("state") in (RunState.STARTING, RunState.RUNNING) for e in events):
            self.show_run(run_id, follow=True)

    def _pick_default(self) -> None:
        running = self.store.running()
        ids = running or self.store.run_ids()
        if ids:
            self.show_run(ids[0], follow=True)

    def show_run(self, run_id: str, follow: bool = False) -> None:
        self.run_id, self.follow, self._drawn = run_id, follow, None
        self.redraw()

    def action_choose_run(self) -> None:
        with self.store.lock:
            options = [(run_label(self.store.runs[r]), r) for r in sorted(self.store.runs, reverse=True)]

        def picked(run_id: str | None) -> None:
            if run_id:
                self.show_run(run_id)

        self.app.push_screen(PickScreen("Show the metrics of run", options, empty="no runs yet"), picked)

    def action_follow(self) -> None:
        self.follow = True
        self._pick_default()
        self.app.notify("Following the running stage")

    def action_accept_suggestion(self) -> None:
        """Send the latest suggestion's mix as a control request: answered with its step, replayed on resume."""
        with self.store.lock:
            h = self.store.runs.get(self.run_id) if self.run_id else None
            sug = dict(h.suggestion) if h is not None and h.suggestion else None
            live = h is not None and h.state in RunState.LIVE
        if sug is None:
            self.app.notify("No mix suggestion for this run (a stage suggests with mix_policy = \"suggest\")",
                            severity="warning")
        elif sug.get("auto"):
            self.app.notify("This stage applies its suggestions itself (mix_policy = \"auto\")")
        elif not live:
            self.app.notify(f"Run {self.run_id} is not training: the suggestion cannot be applied", severity="warning")
        else:
            self.send_suggestion(self.run_id, dict(sug["mix"]), sug.get("step"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="metrics-control")
    def send_suggestion(self, run_id: str, mix: dict[str, float], step: Any) -> None:
        request_id = RunDir(self.ws.runs_dir / run_id).send_request(mix=mix)
        self.app.call_from_thread(self.app.notify, f"Mix suggested at step {step} sent to run {run_id} "
                                                   f"(request {request_id}); it applies at the next step")

    def action_view(self) -> None:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        self._drawn = None
        self.redraw()

    # -- drawing -----------------------------------------------------------------------------------

    def redraw(self) -> None:
        if self.run_id is None:
            if self.store.runs:
                self._pick_default()
            return
        with self.store.lock:
            h = self.store.runs.get(self.run_id)
            if h is None:
                return
            key = (self.run_id, h.version, self.view, self.size, self.follow)
            if key == self._drawn:
                return
            self._drawn = key
            data = self._copy(h)
        self._draw(data)

    def _copy(self, h: Any) -> dict:
        """Everything drawn, copied out under the store's lock."""
        domains = h.domains()
        if self.view == "total":
            keys = [("loss", "train"), ("eval", "held-out")]
        elif self.view == "domains":
            keys = [(f"loss/{d}", d) for d in domains]
        else:
            keys = [(f"eval/{d}", d) for d in domains]
        lines = []
        for i, (key, label) in enumerate(keys):
            s = h.series.get(key)
            if s is not None:
                xs, ys = s.points()
                color = PALETTE[i % len(PALETTE)]
                if self.view == "domains":  # noisy per-domain losses: the raw values faint, their EMA bright
                    ema = smooth(ys)
                    lines.append(Line(label, xs, ys, color, faint=True))
                    lines.append(Line(label, xs, ema, color, ema[-1] if ema else None))
                else:
                    lines.append(Line(label, xs, ys, color, s.last))
        mixes = list(h.mixes)
        stats = {}
        for key, _ in STATS:
            s = h.series.get(key)
            stats[key] = (list(s.ys)[-SPARK_POINTS:], s.last) if s is not None else ([], None)
        in_force = mixes[-1][1] if mixes else h.start_mix
        return {
            "suggestion": suggestion_lines(h.suggestion, in_force) if h.suggestion else None,
            "title": title_parts(h, self.follow), "lines": lines, "mixes": mixes, "domains": domains,
            "stats": stats, "x_max": max(h.max_steps, h.step, 1), "step": h.step,
        }

    def _draw(self, d: dict) -> None:
        try:
            self.query_one("#metrics-title", PartsLine).set(d["title"])
        except NoMatches:  # called before the pane's widgets are mounted: the next tick draws
            self._drawn = None
            return
        x_range = (0, d["x_max"])
        view = "per domain, smoothed" if self.view == "domains" else self.view
        self.query_one("#loss-plot", LinePlot).plot(d["lines"], x_range, title=f"loss ({view})")
        changes = [(step, mix) for step, mix, _ in d["mixes"]]
        self.query_one("#mix-strips", MixStrips).show(changes, d["domains"], x_range, d["step"])
        head, why = d["suggestion"] or ("", "")
        for wid, text in (("#suggestion", head), ("#suggestion-why", why)):
            line = self.query_one(wid, TextLine)
            line.set(text)
            line.display = bool(text)
        for key, _ in STATS:
            ys, last = d["stats"][key]
            unit = "B" if key == "mem_bytes" else ""
            value = ("-",) if last is None else (f"{last * 100:.1f}%",) if key == "mfu" else \
                (fmt_number(last) + unit, fmt_number(last, 2) + unit)  # the shorter one for narrow stats
            stat = self.query_one(f"#stat-{key}", Stat)
            stat.show(value, ys)
            if key == "mfu":  # reported on CUDA only: elsewhere its room goes to the others
                stat.display = last is not None
