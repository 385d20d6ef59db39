"""Eval pane: held-out loss per domain (bits per byte where the trainer reports it), runs side by side.

The first table is the trainer's own `eval` events: for each picked run, its latest evaluation,
one column per run. The second is the eval harness's runs/<id>/evals.jsonl records (bits per byte
per domain, probe scores): first each run's latest checkpoint eval, pinned, then any newer
in-training eval the trainer wrote; the third, each run's latest benchmark suites (`fcwork eval RUN
--suite NAME`: lm-eval on the HF export), every task's score and the suite's centred score (0 =
chance, 1 = perfect); the first record's sample generations below. `e` runs
the harness on the first run, `g` prompts its model, `x` exports it, `b` scores it on a benchmark
suite, each in a child process
(torch stays out of the app); a run without a checkpoint is said so in one line and no child
starts. An eval shows its progress until it ends, then its result stays on the line above.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

from engine.errors import FcError
from engine.eval.harness import read_evals
from engine.jobs.procs import child_env
from engine.jobs.protocol import Event
from engine.jobs.rundir import RunDir
from engine.lmeval import SUITES, is_suite_record, latest_suites
from fcwork.format import PROBE_LABELS, fmt_loss_bpb, fmt_num
from fcwork.panes.base import Pane
from fcwork.widgets.generate_screen import GenerateScreen
from fcwork.widgets.modals import PickManyScreen, PickScreen
from fcwork.widgets.row_table import RowTable
from fcwork.widgets.textline import PartsLine

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


def run_header(run_id: str, note: str = "") -> str:
    """A run's column header on two lines (date, then time and stage), so that runs side by side
    fit at 60 columns; a note on a third."""
    date, sep, rest = run_id.partition("-")
    head = f"{date}\n{rest}" if sep and date.isdigit() else run_id
    return f"{head}\n{note}" if note else head


class EvalPane(Pane):
    """Latest held-out evaluation of several runs, side by side."""

    TITLE = "Eval"
    BINDINGS = [
        Binding("r", "choose_runs", "Runs", tooltip="pick the runs to compare (space ticks, enter accepts)"),
        Binding("h", "history", "History", tooltip="the first run's evals at each step instead of runs side by side"),
        Binding("e", "run_eval", "Evaluate", tooltip="evaluate the first run's latest checkpoint (bits per byte, "
                                                     "probes, samples)"),
        Binding("g", "generate", "Try", tooltip="prompt the first run's latest checkpoint"),
        Binding("x", "export", "Export", tooltip="export the first run's latest checkpoint (hf, gguf, mlx)"),
        Binding("b", "benchmark", "Bench", show=False,
                tooltip="score the first run's latest checkpoint on a benchmark suite (lm-eval on its hf export)"),
    ]
    HELP_KEYS = (("up / down", "move in the table"),)

    class JobProgress(Message):
        """A line of the eval child's progress (done < 0: it ended, `label` says how)."""

        def __init__(self, run: str, label: str, done: int, total: int, error: bool = False) -> None:
            super().__init__()
            self.run, self.label, self.done, self.total, self.error = run, label, done, total, error

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.run_ids: list[str] = []
        self.chosen = False  # runs picked by hand (else: the newest runs with evals)
        self.history = False  # one column per eval of the first run instead of runs side by side
        self.evaluating: str | None = None  # the run an eval child is scoring
        self._drawn: tuple | None = None
        # run -> (evals.jsonl mtime, harness records shown, latest record of each suite)
        self._harness: dict[str, tuple[int, list[dict], dict[str, dict]]] = {}

    def compose(self) -> ComposeResult:
        yield PartsLine(id="eval-title", classes="pane-title")
        yield Static("", markup=False, id="eval-job")
        yield ProgressBar(id="eval-progress", show_eta=False)
        yield RowTable(id="evals", header_height=2)
        yield Static("", markup=False, id="eval-status")
        with VerticalScroll(id="harness-box"):
            yield RowTable(id="harness", header_height=3)
            yield RowTable(id="suites", header_height=2)
            yield Static("", markup=False, id="eval-samples")

    def on_mount(self) -> None:
        self.query_one("#eval-job").display = False
        self.query_one("#eval-progress").display = False
        self.set_interval(REDRAW_S, self.redraw_shown)

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
            options = [(f"{r}  {len(h.evals)} evals", r, r in self.run_ids)  # the id names the stage
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

    def _first_run(self, what: str) -> str | None:
        """The run `e`, `g` and `x` act on: the first picked run, else the newest run with a checkpoint.
        A run without a checkpoint is said in one line (None: nothing to start)."""
        run = self.run_ids[0] if self.run_ids else None
        if run is None:
            with self.store.lock:
                newest = sorted(self.store.runs, reverse=True)
            run = next((r for r in newest if RunDir(self.ws.runs_dir / r).checkpoints()), None)
            if run is None:
                self.app.notify(f"no run with a checkpoint to {what} yet", severity="warning")
                return None
        if not RunDir(self.ws.runs_dir / run).checkpoints():
            text = (f"{run} has no checkpoint yet, nothing to {what}: the trainer saves one every "
                    "checkpoint_every steps (r picks another run)")
            self._job_line(text, error=True)
            self.app.notify(text, severity="warning")
            return None
        return run

    def action_run_eval(self) -> None:
        if self.evaluating:
            self.app.notify(f"already evaluating {self.evaluating}")
            return
        run = self._first_run("evaluate")
        if run is None:
            return
        self.evaluating = run
        self._job_line(f"evaluating {run}: starting...")
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.evaluate(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval")
    def evaluate(self, run: str) -> None:
        """`python -m fcwork.jobs eval` (torch in the child), its progress passed up as it comes."""
        start = time.monotonic()
        try:
            result = self.run_job("eval", run, lambda *line: self.post_message(self.JobProgress(run, *line)))
        except FcError as exc:
            self.post_message(self.JobProgress(run, f"eval of {run} failed: {exc}", -1, 0, error=True))
            return
        bpb = result.get("bpb")
        self.post_message(self.JobProgress(
            run, f"evaluated {run} at step {result.get('step')} on {result.get('device')} in "
                 f"{time.monotonic() - start:.0f} s: bits per byte {fmt_num(bpb, 3)} (first column below)", -1, 0))

    def on_eval_pane_job_progress(self, event: EvalPane.JobProgress) -> None:
        bar = self.query_one("#eval-progress", ProgressBar)
        if event.done < 0:  # ended: the result (or the error) stays on the line
            self.evaluating = None
            bar.display = False
            self._job_line(event.label, error=event.error)
            self.app.notify(event.label, severity="error" if event.error else "information")
            self._drawn = None
            self.redraw()
            return
        total = f" ({event.done}/{event.total})" if event.total else ""
        self._job_line(f"evaluating {event.run}: {event.label}{total}")
        bar.update(total=event.total or None, progress=max(0, event.done))

    def _job_line(self, text: str, error: bool = False) -> None:
        line = self.query_one("#eval-job", Static)
        line.display = bool(text)
        line.update(Text(text))
        line.set_class(error, "-error")

    def action_generate(self) -> None:
        """Prompt a run's latest checkpoint and watch its answer stream in."""
        run = self._first_run("try")
        if run is not None:
            self.app.push_screen(GenerateScreen(self.ws.root, run))

    def action_export(self) -> None:
        """Export a run's latest checkpoint in a format picked from a list, in a `fcwork export` child."""
        run = self._first_run("export")
        if run is None:
            return

        def picked(choice: tuple[str, str] | None) -> None:
            if choice is not None:
                self.app.notify(f"exporting {run} as {choice[0]} {choice[1]}")
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
            last = lines[-1] if lines else f"exit status {proc.returncode}"
            raise FcError(f"export of {run} failed: {last.removeprefix('fcwork: error: ')}")
        self.app.call_from_thread(self.app.notify, next((ln for ln in lines if ln.startswith("exported")), "exported"))

    def action_benchmark(self) -> None:
        """Score a run's latest checkpoint on a suite picked from a list, in a `fcwork eval --suite` child;
        its scores appear in the benchmarks table when the child has written them."""
        run = self._first_run("benchmark")
        if run is None:
            return
        notes = {"local": "offline", "code": "runs the model's programs on this machine"}
        choices = [(f"{name}: {' '.join(tasks)} ({notes.get(name, 'lm-eval downloads the tasks')})", name)
                   for name, tasks in SUITES.items()]

        def picked(suite: str | None) -> None:
            if suite is not None:
                self._job_line(f"scoring {run} on suite {suite} (lm-eval on its hf export)...")
                self.run_worker(lambda: self._benchmark(run, suite), name=f"suite {run}", group="suite",
                                thread=True, exclusive=True, exit_on_error=False)

        self.app.push_screen(PickScreen(f"Score {run} (latest checkpoint) on", choices), picked)

    def _benchmark(self, run: str, suite: str) -> None:
        """Thread worker: `fcwork eval RUN --suite NAME`; its one-line error, or where the scores are, is said."""
        args = ["--allow-code"] if suite == "code" else []
        proc = subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(self.ws.root), "eval", run,
                               "--suite", suite, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env={**child_env(), "COLUMNS": "400"})
        if proc.returncode:
            said = [ln for ln in proc.stderr.splitlines() if ln.startswith("fcwork: error:")]
            text = f"suite {suite} of {run} failed: " + (
                said[-1].removeprefix("fcwork: error: ") if said else f"exit status {proc.returncode}")
        else:
            text = f"scored {run} on suite {suite}: the benchmarks table below has it"
        self.app.call_from_thread(self._job_line, text, bool(proc.returncode))
        self.app.call_from_thread(self.app.notify, text, severity="error" if proc.returncode else "information")

    def _latest(self, run: str) -> tuple[int, list[dict], dict[str, dict]]:
        """(mtime, records shown, suites) of a run's evals.jsonl, read again only when it changed (it is
        small): its latest checkpoint eval, then its latest in-training eval when that is newer; and the
        latest record of each benchmark suite."""
        path = RunDir(self.ws.runs_dir / run).evals_file
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return 0, [], {}
        if self._harness.get(run, (None,))[0] != mtime:
            every = read_evals(path.parent)
            recs = [r for r in every if not is_suite_record(r)]
            ckpt = [i for i, r in enumerate(recs) if r.get("checkpoint_sha256")]
            shown = [recs[ckpt[-1]]] if ckpt else []
            if recs and (not ckpt or ckpt[-1] < len(recs) - 1):
                shown.append(recs[-1])
            self._harness[run] = (mtime, shown, dict(latest_suites(every)))
        return self._harness[run]

    def _draw_suites(self, runs: list[str], suites: list[dict[str, dict]]) -> None:
        """Benchmark suites, one column per run that has any: each suite's step, centred score and tasks."""
        table = self.query_one("#suites", DataTable)
        table.clear(columns=True)
        cols = [(r, s) for r, s in zip(runs, suites) if s]
        table.display = bool(cols)
        if not cols:
            return
        table.add_column("benchmarks (lm-eval)", key="what")
        for i, (r, _) in enumerate(cols):
            table.add_column(run_header(r), key=f"c{i}")
        for name in dict.fromkeys(n for _, s in cols for n in s):
            recs = [s.get(name) or {} for _, s in cols]
            ms = [r.get("metrics") or {} for r in recs]
            table.add_row(f"{name} step", *[str(r.get("step", "-")) for r in recs], key=f"{name}/step")
            table.add_row(f"{name} centred", *[fmt_num(m.get("centred"), 3) for m in ms], key=f"{name}/centred")
            for task in dict.fromkeys(t for m in ms for t in (m.get("tasks") or {})):
                scores = [(m.get("tasks") or {}).get(task) or {} for m in ms]
                metric = next((x.get("metric") for x in scores if x.get("metric")), "")
                table.add_row(f" {task} {metric}", *[fmt_num(x.get("score"), 3) for x in scores],
                              key=f"{name}/{task}")

    def _draw_harness(self, runs: list[str], recs: list[list[dict]]) -> None:
        table = self.query_one("#harness", DataTable)
        table.clear(columns=True)
        by_run = list(zip(runs, recs))
        # Checkpoint evals first (pinned: a newer in-training eval never pushes them off), then the trainer's.
        shown = [(r, rec) for r, rs in by_run for rec in rs if rec.get("checkpoint_sha256")]
        shown += [(r, rec) for r, rs in by_run for rec in rs if not rec.get("checkpoint_sha256")]
        samples = self.query_one("#eval-samples", Static)
        if not shown:
            samples.update("no harness evals yet: e evaluates the first run's latest checkpoint")
            return
        ms = [rec.get("metrics") or {} for _, rec in shown]
        table.add_column("eval harness", key="what")
        for i, (r, rec) in enumerate(shown):
            table.add_column(run_header(r, "" if rec.get("checkpoint_sha256") else "(training)"), key=f"c{i}")
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

    def redraw(self) -> None:
        if not self.chosen:
            self.run_ids = self._default_runs()
        latest = {r: self._latest(r) for r in self.run_ids}
        with self.store.lock:
            hs = [self.store.runs[r] for r in self.run_ids if r in self.store.runs]
            key = (tuple((h.run_id, h.version) for h in hs), self.history, tuple(m for m, _, _ in latest.values()))
            if key == self._drawn:
                return
            self._drawn = key
            if self.history and hs:
                h = hs[0]
                columns = [(f"step {e.get('step')}", e) for e in list(h.evals)[-12:]]
                heading = [("Held-out loss", 0), (f"of {h.run_id} at each eval", 0), ("(bits per byte in brackets)", 2)]
            else:
                columns = [(run_header(h.run_id), h.evals[-1] if h.evals else {}) for h in hs]
                heading = [("Held-out loss per domain", 0), ("latest eval of each run", 1),
                           ("(bits per byte in brackets)", 2)]
            domains = list(dict.fromkeys(d for _, e in columns for d in (e.get("domain_loss") or {})))
        self._draw_harness(list(latest), [recs for _, recs, _ in latest.values()])
        self._draw_suites(list(latest), [suites for _, _, suites in latest.values()])
        table = self.query_one("#evals", DataTable)
        table.clear(columns=True)
        self.query_one("#eval-title", PartsLine).set(heading)
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
