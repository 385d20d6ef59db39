"""Eval pane: held-out loss per domain (bits per byte where the trainer reports it), runs side by side.

The first table is the trainer's own `eval` events: for each picked run, its latest evaluation,
one column per run. The second is the eval harness's latest runs/<id>/evals.jsonl record of each run
(bits per byte per domain, probe scores), with its sample generations for the first run below; `e`
runs the harness on the first run, `g` prompts its model, `x` exports it, each through a `fcwork`
child process (torch stays out of the app).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Label, Static

from engine.eval.harness import read_evals
from engine.jobs.procs import child_env
from engine.jobs.protocol import Event
from engine.jobs.rundir import RunDir
from fcwork.format import PROBE_LABELS, fmt_loss_bpb, fmt_num
from fcwork.panes.base import Pane
from fcwork.widgets.generate_screen import GenerateScreen
from fcwork.widgets.modals import PickManyScreen, PickScreen
from fcwork.widgets.row_table import RowTable

REDRAW_S = 1.0
EXPORT_CHOICES = [
    ("hf f32: transformers (config.json, model.safetensors, tokenizer)", ("hf", "f32")),
    ("hf bf16", ("hf", "bf16")),
    ("gguf f16: llama.cpp", ("gguf", "f16")),
    ("gguf q8 (Q8_0)", ("gguf", "q8")),
    ("gguf f32", ("gguf", "f32")),
    ("mlx f32: mlx-lm on the Mac", ("mlx", "f32")),
    ("mlx q8 (mlx-lm's converter; needs mlx)", ("mlx", "q8")),
]
DEFAULT_RUNS = 3


class EvalPane(Pane):
    """Latest held-out evaluation of several runs, side by side."""

    TITLE = "Eval"
    BINDINGS = [
        Binding("r", "choose_runs", "Runs"),
        Binding("h", "history", "Step history"),
        Binding("e", "run_eval", "Evaluate run"),
        Binding("g", "generate", "Try the model"),
        Binding("x", "export", "Export"),
    ]

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.run_ids: list[str] = []
        self.chosen = False  # runs picked by hand (else: the newest runs with evals)
        self.history = False  # one column per eval of the first run instead of runs side by side
        self._drawn: tuple | None = None
        self._harness: dict[str, tuple[int, dict]] = {}  # run -> (evals.jsonl mtime, latest record)

    def compose(self) -> ComposeResult:
        yield Label("Held-out loss per domain (bits per byte in brackets)", markup=False, id="eval-title",
                    classes="pane-title")
        yield RowTable(id="evals")
        yield Static("", markup=False, id="eval-status")
        with VerticalScroll(id="harness-box"):
            yield RowTable(id="harness")
            yield Static("", markup=False, id="eval-samples")

    def on_mount(self) -> None:
        self.set_interval(REDRAW_S, self._tick)

    def focus_main(self) -> None:
        self.query_one("#evals", DataTable).focus()

    def set_runs(self, run_ids: list[str]) -> None:
        self._drawn = None

    def run_notices(self, run_id: str, events: list[dict], replay: bool) -> None:
        if any(e.get("type") == Event.EVAL for e in events):
            self._drawn = None

    def _default_runs(self) -> list[str]:
        """The newest runs with an eval: the trainer's (events) or the harness's (evals.jsonl)."""
        with self.store.lock:
            newest = sorted(self.store.runs, reverse=True)
            with_evals = [r for r in newest if self.store.runs[r].evals]
        harness = [r for r in newest if r not in with_evals and RunDir(self.ws.runs_dir / r).evals_file.exists()]
        return sorted(with_evals + harness, reverse=True)[:DEFAULT_RUNS]

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

    def action_run_eval(self) -> None:
        if not self.run_ids:
            self.notify("no run to evaluate: r picks runs", severity="warning")
            return
        run = self.run_ids[0]
        self.notify(f"evaluating {run}")
        self.run_worker(lambda: self._evaluate(run), name=f"eval {run}", group="eval", thread=True, exclusive=True,
                        exit_on_error=False)

    def _checkpointed_run(self, what: str) -> str | None:
        """The first picked run, else the newest run with a checkpoint (None, with a warning, if none)."""
        run = self.run_ids[0] if self.run_ids else None
        if run is None:
            with self.store.lock:
                newest = sorted(self.store.runs, reverse=True)
            run = next((r for r in newest if RunDir(self.ws.runs_dir / r).checkpoints()), None)
        if run is None:
            self.notify(f"no run with a checkpoint to {what} yet", severity="warning")
        return run

    def action_generate(self) -> None:
        """Prompt a run's latest checkpoint and watch its answer stream in."""
        run = self._checkpointed_run("try")
        if run is not None:
            self.app.push_screen(GenerateScreen(self.ws.root, run))

    def action_export(self) -> None:
        """Export a run's latest checkpoint in a format picked from a list, in a `fcwork export` child."""
        run = self._checkpointed_run("export")
        if run is None:
            return

        def picked(choice: tuple[str, str] | None) -> None:
            if choice is not None:
                self.notify(f"exporting {run} as {choice[0]} {choice[1]}")
                self.run_worker(lambda: self._export(run, *choice), name=f"export {run}", group="export",
                                thread=True, exclusive=True, exit_on_error=False)

        self.app.push_screen(PickScreen(f"Export {run} (latest checkpoint) as", EXPORT_CHOICES), picked)

    def _export(self, run: str, fmt: str, dtype: str) -> None:
        """Thread worker: `fcwork export`; the folder it wrote, or its one-line error, becomes a notification."""
        proc = subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(self.ws.root), "export", run,
                               "--format", fmt, "--dtype", dtype], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, env={**child_env(), "COLUMNS": "400"})
        lines = (proc.stderr if proc.returncode else proc.stdout).strip().splitlines()
        if proc.returncode:
            raise RuntimeError(f"fcwork export {run}: {lines[-1] if lines else f'exit status {proc.returncode}'}")
        self.app.call_from_thread(self.notify, next((ln for ln in lines if ln.startswith("exported")), "exported"))

    def _evaluate(self, run: str) -> None:
        """Thread worker: `fcwork eval RUN` in a child process; a failure raises (the app notifies)."""
        proc = subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(self.ws.root), "eval", run],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, env=child_env())
        if proc.returncode:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit status {proc.returncode}"]
            raise RuntimeError(f"fcwork eval {run}: {lines[-1]}")
        self.app.call_from_thread(self._evaluated, run)

    def _evaluated(self, run: str) -> None:
        self.notify(f"evaluated {run}")
        self._drawn = None
        self.redraw()

    def _latest(self, run: str) -> tuple[int, dict]:
        """(mtime, latest record) of a run's evals.jsonl, read again only when it changed (it is small)."""
        path = RunDir(self.ws.runs_dir / run).evals_file
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return 0, {}
        if self._harness.get(run, (None,))[0] != mtime:
            recs = read_evals(path.parent)
            self._harness[run] = (mtime, recs[-1] if recs else {})
        return self._harness[run]

    def _draw_harness(self, runs: list[str], recs: list[dict]) -> None:
        table = self.query_one("#harness", DataTable)
        table.clear(columns=True)
        shown = [(r, rec) for r, rec in zip(runs, recs) if rec]
        samples = self.query_one("#eval-samples", Static)
        if not shown:
            samples.update("no harness evals yet: e evaluates the first run's latest checkpoint")
            return
        ms = [rec.get("metrics") or {} for _, rec in shown]
        table.add_column("eval harness", key="what")
        for i, (r, _) in enumerate(shown):
            table.add_column(r, key=f"c{i}")
        table.add_row("step", *[str(rec.get("step", "-")) for _, rec in shown], key="step")
        table.add_row("weights", *[f"ckpt {str(rec['checkpoint_sha256'])[:8]}" if rec.get("checkpoint_sha256")
                                   else "in training" for _, rec in shown], key="weights")
        table.add_row("bpb all", *[fmt_num(m.get("bpb"), 3) for m in ms], key="bpb")
        for d in dict.fromkeys(d for m in ms for d in (m.get("domain_bpb") or {})):
            table.add_row(f"bpb {d}", *[fmt_num((m.get("domain_bpb") or {}).get(d), 3) for m in ms], key=f"bpb/{d}")
        labels = PROBE_LABELS
        probes = dict.fromkeys((p, k) for m in ms for p, v in (m.get("probes") or {}).items() for k in v
                               if k not in ("n", "chance"))
        for p, k in sorted(probes, key=lambda pk: list(labels).index(pk) if pk in labels else len(labels)):
            table.add_row(labels.get((p, k), f"{p} {k}"),
                          *[fmt_num(((m.get("probes") or {}).get(p) or {}).get(k), 3) for m in ms],
                          key=f"probe/{p}/{k}")
        run, rec = shown[0]
        text = [f"Samples of {run} at step {rec.get('step', '-')}"]
        for domain, items in (rec.get("samples") or {}).items():
            for item in items:
                text.append(f"[{domain}] {item.get('prompt', '')} >>> {item.get('completion', '')}")
        samples.update("\n".join(text))

    def _tick(self) -> None:
        if self.active:
            self.redraw()

    def redraw(self) -> None:
        if not self.chosen:
            self.run_ids = self._default_runs()
        latest = {r: self._latest(r) for r in self.run_ids}
        with self.store.lock:
            hs = [self.store.runs[r] for r in self.run_ids if r in self.store.runs]
            key = (tuple((h.run_id, h.version) for h in hs), self.history, tuple(m for m, _ in latest.values()))
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
        self._draw_harness(list(latest), [rec for _, rec in latest.values()])
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
        table.add_row("all", *[fmt_loss_bpb(e.get("loss"), None) for _, e in columns], key="all")
        for d in domains:
            table.add_row(d, *[fmt_loss_bpb((e.get("domain_loss") or {}).get(d), (e.get("domain_bpb") or {}).get(d))
                               for _, e in columns], key=d)
