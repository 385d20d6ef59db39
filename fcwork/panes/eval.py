"""Eval pane: held-out loss per domain (bits per byte where the trainer reports it), runs side by side.

Until the eval engine lands, the numbers are the trainer's own `eval` events: for each picked
run, its latest evaluation, one column per run.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label, Static

from fcwork.panes.base import Pane
from fcwork.widgets.modals import PickManyScreen

REDRAW_S = 1.0
DEFAULT_RUNS = 3


def fmt_eval(loss: Any, bpb: Any) -> str:
    if not isinstance(loss, (int, float)):
        return "-"
    return f"{loss:.4f}" + (f" ({bpb:.3f})" if isinstance(bpb, (int, float)) else "")


class EvalPane(Pane):
    """Latest held-out evaluation of several runs, side by side."""

    TITLE = "Eval"
    BINDINGS = [
        Binding("r", "choose_runs", "Runs"),
        Binding("h", "history", "Step history"),
    ]

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.run_ids: list[str] = []
        self.chosen = False  # runs picked by hand (else: the newest runs with evals)
        self.history = False  # one column per eval of the first run instead of runs side by side
        self._drawn: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Label("Held-out loss per domain (bits per byte in brackets)", markup=False, id="eval-title",
                    classes="pane-title")
        yield DataTable(id="evals", cursor_type="row", zebra_stripes=True)
        yield Static("", markup=False, id="eval-status")

    def on_mount(self) -> None:
        self.set_interval(REDRAW_S, self._tick)

    def focus_main(self) -> None:
        self.query_one("#evals", DataTable).focus()

    def set_runs(self, run_ids: list[str]) -> None:
        self._drawn = None

    def run_notices(self, run_id: str, events: list[dict], replay: bool) -> None:
        if any(e.get("type") == "eval" for e in events):
            self._drawn = None

    def _default_runs(self) -> list[str]:
        with self.store.lock:
            with_evals = [r for r in sorted(self.store.runs, reverse=True) if self.store.runs[r].evals]
        return with_evals[:DEFAULT_RUNS]

    def action_choose_runs(self) -> None:
        with self.store.lock:
            options = [(f"{r}  {h.profile}/{h.stage}  {len(h.evals)} evals", r, r in self.run_ids)
                       for r, h in sorted(self.store.runs.items(), reverse=True)]

        def picked(runs: list[str] | None) -> None:
            if runs is not None:
                self.run_ids, self.chosen, self._drawn = runs, True, None
                self.redraw()

        self.app.push_screen(PickManyScreen("Compare the evals of runs", options), picked)

    def action_history(self) -> None:
        self.history = not self.history
        self._drawn = None
        self.redraw()

    def _tick(self) -> None:
        if self.active:
            self.redraw()

    def redraw(self) -> None:
        if not self.chosen:
            self.run_ids = self._default_runs()
        with self.store.lock:
            hs = [self.store.runs[r] for r in self.run_ids if r in self.store.runs]
            key = (tuple((h.run_id, h.version) for h in hs), self.history)
            if key == self._drawn:
                return
            self._drawn = key
            if self.history and hs:
                h = hs[0]
                columns = [(f"step {e.get('step')}", e) for e in list(h.evals)[-12:]]
                heading = f"Held-out loss of {h.run_id} at each eval (bits per byte in brackets)"
            else:
                columns = [(h.run_id, h.evals[-1] if h.evals else {}) for h in hs]
                heading = "Held-out loss per domain, latest eval of each run (bits per byte in brackets)"
            domains = list(dict.fromkeys(d for _, e in columns for d in (e.get("domain_loss") or {})))
        table = self.query_one("#evals", DataTable)
        table.clear(columns=True)
        self.query_one("#eval-title", Label).update(heading)
        if not columns:
            self.query_one("#eval-status", Static).update(
                "no evaluations yet: they appear as the trainer evaluates (every eval_every steps); r picks runs")
            return
        self.query_one("#eval-status", Static).update("")
        table.add_column("domain", key="domain")
        for i, (label, _) in enumerate(columns):
            table.add_column(label, key=f"c{i}")
        table.add_row("step", *[str(e.get("step", "-")) for _, e in columns], key="step")
        table.add_row("all", *[fmt_eval(e.get("loss"), None) for _, e in columns], key="all")
        for d in domains:
            table.add_row(d, *[fmt_eval((e.get("domain_loss") or {}).get(d), (e.get("domain_bpb") or {}).get(d))
                               for _, e in columns], key=d)
