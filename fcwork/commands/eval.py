"""`fcwork eval RUN [--step N]`, `fcwork eval RUN --suite NAME` and `fcwork eval compare RUN RUN...`:
evaluate a checkpoint on held-out data (bits per byte per domain, probes, samples) or on a suite of
standard benchmarks (lm-evaluation-harness on the HF export), and show runs side by side."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from engine.errors import FcError, os_error_line
from engine.jobs.protocol import EntryState
from engine.jobs.rundir import RunDir
from engine.lmeval import SUITES
from engine.workspace import Workspace
from fcwork.format import PROBE_ROWS, fmt_num


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a run's checkpoint on held-out data, or `eval compare RUN RUN...`",
        description="fcwork eval RUN [--step N]: held-out bits per byte per domain, domain probes and sample "
                    "generations, appended to runs/<id>/evals.jsonl. fcwork eval RUN --suite NAME: standard "
                    "benchmarks through lm-evaluation-harness on the run's Hugging Face export (suites: "
                    + "; ".join(f"{k}: {' '.join(v)}" for k, v in SUITES.items()) + "; or the profile's "
                    "[eval.suites]); tasks download as lm-eval does. fcwork eval compare RUN RUN...: the latest "
                    "evals and suite scores of each run side by side.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run id (a folder under runs/) or path; `compare` first to compare")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest); with compare, that step's eval")
    p.add_argument("--show", action="store_true", help="show the latest stored eval instead of evaluating again")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="where to evaluate (default auto: CUDA or MPS when present and no stage of this workspace "
                        "is training, else cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--docs", type=int, help="held-out documents per domain for bits per byte (default 16)")
    p.add_argument("--tokens", type=int, help="held-out tokens per domain at most (default 8192)")
    p.add_argument("--items", type=int, help="items per probe (default: chess 16, code 8, data 8, science 16, chat 12)")
    p.add_argument("--probes", help="comma-separated probes to run, or 'none' (default: chess,code,data,science,chat)")
    p.add_argument("--samples", type=int, help="sample generations per domain (default 1)")
    p.add_argument("--sample-tokens", type=int, help="tokens per sample generation (default 48)")
    p.add_argument("--seed", type=int, help="seed for probe items and samples (default 0)")
    p.add_argument("--suite", metavar="NAME",
                   help=f"run a benchmark suite through lm-eval instead ({', '.join(SUITES)} or the profile's)")
    p.add_argument("--limit", type=int, help="with --suite: items per task at most (default: all)")
    p.add_argument("--fewshot", type=int, help="with --suite: few-shot examples (default: each task's own)")
    p.add_argument("--batch", type=int, default=8, help="with --suite: rows per forward pass (default 8)")
    p.add_argument("--allow-code", action="store_true",
                   help="with --suite: let code tasks (humaneval) run the model's programs on this machine")
    p.set_defaults(func=cmd_eval)


def _limits(args: argparse.Namespace):
    from engine.eval.harness import EvalLimits
    from engine.eval.probes import PROBES

    limits = EvalLimits()
    fields = {"docs": ("bpb_docs",), "tokens": ("bpb_tokens",), "items": PROBES, "samples": ("samples",),
              "sample_tokens": ("sample_tokens",), "seed": ("seed",)}  # option -> the limits it sets
    for arg, names in fields.items():
        value = getattr(args, arg)
        if value is None:
            continue
        if value < 0:
            raise FcError(f"--{arg.replace('_', '-')}: expected a non-negative integer, got {value}")
        for name in names:
            setattr(limits, name, value)
    if args.probes is not None:
        names = () if args.probes.strip() in ("", "none") else tuple(p.strip() for p in args.probes.split(","))
        unknown = [n for n in names if n not in PROBES]
        if unknown:
            raise FcError(f"--probes: {unknown[0]!r} is not a probe (expected some of {', '.join(PROBES)}, or none)")
        limits.probes = names
    limits.check()
    return limits


def cmd_eval(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.workspace)
    if args.runs[0] == "compare":
        if len(args.runs) < 2:
            raise FcError("eval compare: expected at least one RUN to show")
        return compare([RunDir.resolve(ws, r).path for r in args.runs[1:]], args.step)
    if len(args.runs) > 1:
        raise FcError(
            f"eval: expected one RUN (or `eval compare RUN RUN...`), got {len(args.runs)}: {' '.join(args.runs)}")
    if args.suite is not None:
        return cmd_suite(ws, args)
    run_dir = RunDir.resolve(ws, args.runs[0]).path
    console = Console()
    if args.show:
        show_record(console, _stored(run_dir, args.step))
        return 0
    from engine.eval.harness import append_eval, eval_run

    limits = _limits(args)
    device = eval_device(ws, args.device, console)
    with console.status(f"evaluating {run_dir.name} on {device}..."):
        rec = eval_run(run_dir, args.step, limits, device=device, threads=args.threads, save=False)
    show_record(console, rec)  # shown first: a run folder we cannot write to costs the record, not the eval
    try:
        append_eval(run_dir, rec)
    except OSError as exc:
        print(f"fcwork: error: the eval above could not be saved: {os_error_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _suites_of(ws: Workspace, run_dir, suite: str) -> tuple[dict, list]:
    """The run's profile's suites and task folders, read only for a suite that is not built in."""
    from engine.lmeval import profile_suites
    from engine.profile import load_profile

    if suite in SUITES:
        return {}, []
    path = ws.profiles_dir / f"{RunDir(run_dir).spec().profile}.toml"
    if not path.exists():
        return {}, []
    return profile_suites(load_profile(path))


def cmd_suite(ws: Workspace, args: argparse.Namespace) -> int:
    """`fcwork eval RUN --suite NAME`: lm-eval on the run's HF export, shown, then saved to evals.jsonl."""
    for arg, least in (("limit", 1), ("fewshot", 0), ("batch", 1)):
        value = getattr(args, arg)
        if value is not None and value < least:
            raise FcError(f"--{arg}: expected a {'positive' if least else 'non-negative'} integer, got {value}")
    run_dir = RunDir.resolve(ws, args.runs[0]).path
    extra, paths = _suites_of(ws, run_dir, args.suite)
    from engine.lmeval import suite_tasks

    suite_tasks(args.suite, extra)  # an unknown suite is said before torch and lm-eval load
    console = Console()
    if args.show:
        show_suite(console, _stored(run_dir, args.step, args.suite))
        return 0
    from engine.eval.harness import append_eval
    from engine.lmeval.runner import run_suite

    device = eval_device(ws, args.device, console)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with console.status(f"suite {args.suite} on {run_dir.name} ({device})...") as status:
        rec = run_suite(run_dir, args.suite, args.step, args.limit, device, args.batch, args.fewshot,
                        args.allow_code, extra, paths, save=False,
                        progress=lambda label, done, total: status.update(f"suite {args.suite}: {label}..."))
    show_suite(console, rec)
    try:
        append_eval(run_dir, rec)
    except OSError as exc:
        print(f"fcwork: error: the suite scores above could not be saved: {os_error_line(exc)}", file=sys.stderr)
        return 1
    return 0


def show_suite(console: Console, rec: dict) -> None:
    """One suite's scores: per task the main metric, chance, centred score and items; the centred aggregate."""
    m = rec.get("metrics", {})
    console.print(f"[bold]{rec.get('run')}[/] step {rec.get('step')}  suite {rec.get('suite')}  "
                  f"checkpoint {str(rec.get('checkpoint_sha256'))[:12]}  ({rec.get('seconds', 0):.1f} s on "
                  f"{rec.get('device', '?')}, lm-eval {rec.get('lm_eval_version', '?')})")
    t = Table("task", "metric", "score", "chance", "centred", "items",
              title=f"suite {rec.get('suite')} (lm-evaluation-harness on {rec.get('export')})")
    for task, s in (m.get("tasks") or {}).items():
        t.add_row(task, str(s.get("metric")), fmt_num(s.get("score"), 3), fmt_num(s.get("chance"), 3),
                  fmt_num(s.get("centred"), 3), str(s.get("n", "")))
    t.add_row("centred mean", "", "", "", fmt_num(m.get("centred"), 3), "", style="bold")
    console.print(t)
    console.print("centred: (score - chance) / (1 - chance), 0 = chance, 1 = perfect; the mean is the suite's score",
                  style="dim")
    for note in rec.get("notes", []):
        console.print(f"[yellow]{note}[/]")


def eval_device(ws: Workspace, want: str, console: Console) -> str:
    """The device for `--device want`: auto takes the accelerator unless a queued stage is training
    on it (an eval beside a training run could take the memory it needs); cpu otherwise."""
    if want == "cpu":
        return want
    import torch

    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if want != "auto":
        if not has[want]:
            raise FcError(f"--device {want}: this machine has no {want.upper()} device (expected auto, cpu"
                          + "".join(f", {d}" for d in ("cuda", "mps") if has[d]) + ")")
        return want
    accel = next((d for d in ("cuda", "mps") if has[d]), None)
    if accel is None:
        return "cpu"
    from engine.jobs.queue import StageQueue
    from fcwork.commands.queue import warn_orphans

    queue = StageQueue(ws)
    warn_orphans(queue)
    try:
        running = [e for e in queue.read() if e.state == EntryState.RUNNING]
    except FcError:
        running = []
    # Starting (no run yet) or training counts; a run whose trainer is gone does not hold the device.
    busy = [e for e in running if not (e.run_id and RunDir(ws.runs_dir / e.run_id).trainer_gone())]
    if busy:
        console.print(f"evaluating on cpu: stage {busy[0].stage} (entry {busy[0].id}) is training "
                      f"(--device {accel} to use it anyway)")
        return "cpu"
    return accel


def _stored(run_dir, step: int | None, suite: str = "") -> dict:
    """The latest stored held-out eval (at `step` when given), or with `suite` that suite's latest scores."""
    from engine.eval.harness import read_evals
    from engine.lmeval import is_suite_record

    recs = [r for r in read_evals(run_dir) if (step is None or r.get("step") == step)
            and ((is_suite_record(r) and r.get("suite") == suite) if suite else not is_suite_record(r))]
    if not recs:
        at = f" at step {step}" if step is not None else ""
        what, flag = (f"{suite} suite scores", f" --suite {suite}") if suite else ("eval", "")
        raise FcError(f"{RunDir(run_dir).evals_file}: no {what}{at} yet (run `fcwork eval {run_dir.name}{flag}`)")
    return recs[-1]


def show_record(console: Console, rec: dict) -> None:
    """One eval: bits per byte and loss per domain, probe scores, sample generations."""
    m = rec.get("metrics", {})
    sha = str(rec.get("checkpoint_sha256") or "in memory")[:12]
    console.print(f"[bold]{rec.get('run')}[/] step {rec.get('step')}  checkpoint {sha}"
                  f"  ({rec.get('seconds', 0):.1f} s on {rec.get('device', '?')})")
    t = Table("domain", "bits/byte", "loss", "tokens", "bytes", title="held-out")
    for d, bpb in m.get("domain_bpb", {}).items():
        t.add_row(d, fmt_num(bpb), fmt_num(m.get("domain_loss", {}).get(d)),
                  str(m.get("domain_tokens", {}).get(d, "-")), str(m.get("domain_bytes", {}).get(d, "-")))
    t.add_row("all", fmt_num(m.get("bpb")), fmt_num(m.get("loss")), "", "", style="bold")
    console.print(t)
    probes = m.get("probes", {})
    if probes:
        pt = Table("probe", "score", "items", title="probes (answers checked by python-chess, compile(), Python)")
        for probe, metric, label in PROBE_ROWS:
            if probe in probes and metric in probes[probe]:
                pt.add_row(label, fmt_num(probes[probe][metric], 3), str(probes[probe].get("n", "")))
        console.print(pt)
    for note in rec.get("notes", []):
        console.print(f"[yellow]{note}[/]")
    for domain, items in rec.get("samples", {}).items():
        for s in items[:1]:
            prompt, completion = _oneline(s.get("prompt", ""), 60), _oneline(s.get("completion", ""), 100)
            console.print(f"[bold]{domain}[/] [dim]{prompt}[/] → {completion}", highlight=False)


def _oneline(text: str, n: int) -> str:
    from rich.markup import escape

    flat = text.replace("\n", "⏎")
    return escape(flat if len(flat) <= n else flat[:n] + "…")


def compare(run_dirs: list, step: int | None) -> int:
    """The latest (or step N) eval and suite scores of each run, one column each: a pretraining run, its SFT
    run and the merged export that suites score line up in one table."""
    from engine.eval.harness import read_evals
    from engine.lmeval import is_suite_record, latest_suites

    cols = []
    for d in run_dirs:
        recs = [r for r in read_evals(d) if step is None or r.get("step") == step]
        harness = [r for r in recs if not is_suite_record(r)]
        suites = latest_suites(recs)
        if not harness and not suites:
            at = f" at step {step}" if step is not None else ""
            raise FcError(f"{RunDir(d).evals_file}: no eval{at} yet (run `fcwork eval {d.name}`)")
        try:
            stage = RunDir(d).meta().stage
        except FcError:
            stage = "?"
        cols.append((d, stage, harness[-1] if harness else {}, suites))
    table = Table("metric", *[f"{d.name}\n{stage}" for d, stage, _, _ in cols], title="evals side by side")
    recs = [h for _, _, h, _ in cols]
    ms = [r.get("metrics", {}) for r in recs]
    if any(recs):
        table.add_row("step (held-out, probes)", *[str(r.get("step", "-")) for r in recs])
        table.add_row("bits/byte, all", *[fmt_num(m.get("bpb")) for m in ms], style="bold")
        table.add_row("loss, all", *[fmt_num(m.get("loss")) for m in ms])
    domains = list(dict.fromkeys(d for m in ms for d in m.get("domain_bpb", {})))
    for d in domains:
        table.add_row(f"bits/byte, {d}", *[fmt_num(m.get("domain_bpb", {}).get(d)) for m in ms])
    for probe, metric, label in PROBE_ROWS:
        if any(metric in m.get("probes", {}).get(probe, {}) for m in ms):
            table.add_row(label, *[fmt_num(m.get("probes", {}).get(probe, {}).get(metric), 3) for m in ms])
    for suite in dict.fromkeys(s for _, _, _, ss in cols for s in ss):
        srecs = [ss.get(suite) or {} for _, _, _, ss in cols]
        table.add_row(f"{suite}: step, weights", *[
            f"{r.get('step')}, {'merged LoRA' if r.get('merged_lora') else 'hf export'}" if r else "-" for r in srecs])
        table.add_row(f"{suite}: centred", *[fmt_num((r.get("metrics") or {}).get("centred"), 3) for r in srecs],
                      style="bold")
        tasks = list(dict.fromkeys(t for r in srecs for t in ((r.get("metrics") or {}).get("tasks") or {})))
        for task in tasks:
            scores = [((r.get("metrics") or {}).get("tasks") or {}).get(task) or {} for r in srecs]
            metric = next((s.get("metric") for s in scores if s.get("metric")), "")
            table.add_row(f"  {task} {metric}", *[fmt_num(s.get("score"), 3) for s in scores])
    versions = [r.get("probe_versions", {}) for r in recs if r]
    if any(v != versions[0] for v in versions):
        table.caption = "probe versions differ between these evals: compare probe scores with care"
    Console().print(table)
    return 0
