"""`fcwork train`, `fcwork run` and `fcwork mix`: train in the foreground, run a whole profile
through the queue, and change the mix of a running stage."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.errors import MixError, ProfileError, RunError
from engine.jobs.protocol import Answer, EntryState, Event, RunState
from engine.jobs.rundir import RunDir
from engine.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train one stage in the foreground with a live view (Ctrl-C stops cleanly)")
    t.add_argument("profile")
    t.add_argument("stage")
    t.set_defaults(func=cmd_train)
    r = sub.add_parser("run", help="the whole profile: data, tokenizer, shards, then every stage through the queue")
    r.add_argument("profile", nargs="?", default="default")
    r.add_argument("--no-train", action="store_true", help="prepare the data only")
    r.add_argument("--detach", action="store_true", help="queue the stages and return at once")
    r.add_argument("--force-data", action="store_true", help="redo corpus, tokenizer and shards")
    r.set_defaults(func=cmd_run)
    m = sub.add_parser(
        "mix", help="change the domain mix of a running stage (applied at its next step)",
        description="Change the mix of a running stage. The domains you name take the weights you give; every "
                    "other domain keeps the weight it trains with now; then the mix is normalised to sum to 1. "
                    "With --only, the domains you name are the whole mix and every other one drops to 0. "
                    "Example: with science=0.5 code=0.5 in force, `fcwork mix RUN code=1` trains on "
                    "science=0.333 code=0.667, and `fcwork mix RUN --only code=1` on code alone. "
                    "With --accept-suggestion, the mix the stage's policy last suggested (mix_policy = \"suggest\").",
    )
    m.add_argument("run", help="run id (a folder under runs/) or path")
    m.add_argument("weights", nargs="*", metavar="DOMAIN=WEIGHT",
                   help="new weights of the named domains (relative to the others' current weights)")
    m.add_argument("--accept-suggestion", action="store_true",
                   help="apply the latest mix suggestion of the run (`fcwork runs show RUN` prints it with its reasons)")
    m.add_argument("--only", action="store_true",
                   help="these domains and nothing else: every domain not named gets weight 0")
    m.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the trainer's answer")
    m.set_defaults(func=cmd_mix, rest="weights")


# -- fcwork train ---------------------------------------------------------------------

class _Interrupts:
    """Counts Ctrl-C presses while in use (`with interrupts:`) instead of raising KeyboardInterrupt,
    which could land inside the live display's locks; the follow loops look at `count`."""

    def __init__(self) -> None:
        self.count = 0
        self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        self.count += 1

    def __enter__(self) -> "_Interrupts":
        self.count = 0
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)


interrupts = _Interrupts()


def cmd_train(args: argparse.Namespace) -> int:
    from engine.jobs.procs import spawn_trainer
    from engine.jobs.runs import create_run
    from fcwork.live import follow_run

    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    prof.stage(args.stage)
    console = Console(stderr=True)
    from fcwork.commands.queue import print_passes

    print_passes(ws, prof, args.stage, console)
    run = RunDir(create_run(ws, prof, args.stage))
    console.print(f"run {run.id}: {prof.name} / {args.stage} (log: {run.trainer_log})")
    proc = spawn_trainer(run.path)
    handled = 0

    def check() -> bool:
        """Act on Ctrl-C presses since the last look; True once the trainer has exited."""
        nonlocal handled
        while handled < interrupts.count:
            handled += 1
            if handled == 1:
                run.send_request(stop=True)
                console.print("stopping: the trainer checkpoints, then exits (Ctrl-C again to send SIGTERM)")
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                console.print("sent SIGTERM to the trainer")
        return proc.poll() is not None

    with interrupts:
        tail = follow_run(run.path, check, console, label=args.stage)
    rc = proc.wait()
    state = tail.state or "?"
    console.print(f"run {run.id}: {state} at step {tail.step}/{tail.max_steps} (exit {rc})")
    if rc != 0 and tail.errors:
        console.print(f"[red]{tail.errors[-1].get('message', '')}[/]")
    return rc if rc >= 0 else 128 - rc


# -- fcwork run -----------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from engine.data.pipeline import prepare_data
    from engine.jobs.procs import SUPERVISOR_LOG, ensure_supervisor
    from engine.jobs.queue import StageQueue, profile_key
    from fcwork.live import follow_queue
    from fcwork.progress import rich_progress

    ws = Workspace.open(args.workspace)
    prof = ws.load_profile(args.profile)
    console = Console(stderr=True)
    notes: list[str] = []
    with rich_progress(console) as progress:
        ran = prepare_data(ws, prof, progress, force=args.force_data, notes=notes)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"data of {prof.name}: " + (f"ran {', '.join(ran)}" if ran else "up to date"))
    if args.no_train:
        return 0
    if not prof.stages:
        raise ProfileError(f"{prof.path}: stages: the profile has no [[stages]] to train")
    queue = StageQueue(ws)
    key = profile_key(ws, args.profile)
    active = {(e.profile, e.stage): e for e in queue.read() if e.state in EntryState.ACTIVE}
    ids = [active[(key, st.name)].id for st in prof.stages if (key, st.name) in active]  # already queued
    new = [st.name for st in prof.stages if (key, st.name) not in active]
    added = queue.add_many(args.profile, new) if new else []
    from fcwork.commands.queue import print_passes

    for st in new:
        print_passes(ws, prof, st, console, indent=f"{st}: ")
    ids = sorted(ids + [e.id for e in added])
    pid = ensure_supervisor(ws)
    console.print(f"queued {', '.join(f'#{i}' for i in ids)}; supervisor pid {pid} (log: {ws.root / SUPERVISOR_LOG})")
    if args.detach:
        console.print("detached: follow with `fcwork queue list` or the TUI")
        return 0
    with interrupts:
        follow_queue(ws, ids, console, stop=lambda: interrupts.count > 0)
    if interrupts.count:
        console.print("detached; the stages keep training (`fcwork queue list`)")
        return 130
    entries = [e for e in queue.read() if e.id in ids]
    Console().print(summary_table(ws, entries))
    return 0 if all(e.state == EntryState.DONE for e in entries) else 1


def eval_events(run_dir: Path) -> list[dict]:
    """The run's `eval` events, in order."""
    return [e for e in RunDir(run_dir).read_events()[0] if e.get("type") == Event.EVAL]


def summary_table(ws: Workspace, entries: list) -> Table:
    """Per entry: state, run, and the held-out loss at its first and last eval."""
    table = Table("stage", "state", "run", "first eval (step: loss)", "last eval (step: loss)", "message",
                  title="summary")
    for e in entries:
        evals = eval_events(ws.runs_dir / e.run_id) if e.run_id else []
        first = f"{evals[0].get('step')}: {evals[0].get('loss'):.4f}" if evals else "-"
        last = f"{evals[-1].get('step')}: {evals[-1].get('loss'):.4f}" if evals else "-"
        table.add_row(e.stage, e.state, e.run_id or "-", first, last, e.message)
    return table


# -- fcwork mix -----------------------------------------------------------------------

def _suggested_mix(run: RunDir) -> dict[str, float]:
    """The run's latest suggested mix, its reasons printed; a one-line error when there is none to accept."""
    from fcwork.format import suggestion_lines

    sug = run.history().suggestion
    if sug is None:
        raise RunError(f"{run.path}: no mix suggestion yet (a stage with mix_policy = \"suggest\" makes one at its "
                       "evals, from the second on)")
    if sug.get("auto"):
        raise RunError(f"{run.path}: this stage applies its suggestions itself (mix_policy = \"auto\"); "
                       f"the one of step {sug.get('step')} is in force")
    head, _ = suggestion_lines(sug)
    print(head.replace(" (a accepts)", ""))
    for reason in (sug.get("reasons") or {}).values():
        print(f"  {reason}")
    return {str(d): float(w) for d, w in sug["mix"].items()}


def cmd_mix(args: argparse.Namespace) -> int:
    from engine.mix import describe, merge, normalise, parse_pairs

    ws = Workspace.open(args.workspace)
    run = RunDir.resolve(ws, args.run)
    if args.accept_suggestion:
        if args.weights or args.only:
            raise MixError(f"{' '.join(args.weights) or '--only'}: expected either DOMAIN=WEIGHT pairs or "
                           "--accept-suggestion, not both")
        mix = _suggested_mix(run)
    elif not args.weights:
        raise MixError("expected DOMAIN=WEIGHT pairs (e.g. code=0.4) or --accept-suggestion")
    else:
        domains = run.meta().domains
        changes = parse_pairs(args.weights, domains, partial=not args.only)  # a bad argument is a MixError naming it
    if run.trainer_pid() is None:
        raise RunError(f"{run.path}: no trainer is running for this run; a mix change needs a training stage")
    if not args.accept_suggestion:
        current = run.current_mix()
        # The named domains change; the others keep their weights (--only: drop to 0); then normalised.
        try:
            mix = merge({d: current.get(d, 0.0) for d in domains}, changes, only=args.only)
        except MixError as exc:  # e.g. every domain would be 0
            raise MixError(f"{' '.join(args.weights)}: {exc}") from None
    offset = run.events_size()
    request = run.send_request(mix=mix)
    print(f"mix request {request} sent to {run.id}: {describe(mix)}")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        events, offset = run.read_events(offset)
        for ev in events:
            if ev.get("type") == Event.ANSWER and ev.get("request_id") == request:
                if ev.get("outcome") == Answer.APPLIED:
                    print(f"applied from step {ev.get('step')}: {describe(normalise(mix))}")
                    return 0
                if ev.get("outcome") == Answer.SUPERSEDED:
                    print(f"superseded at step {ev.get('step')} by request {ev.get('by')}, sent just after it")
                    return 0
                print(f"fcwork: error: the trainer rejected the mix: {ev.get('message', '')}", file=sys.stderr)
                return 1
            if ev.get("type") == Event.STATUS and ev.get("state") in RunState.FINAL:
                print(f"fcwork: error: the trainer {ev.get('state')} before applying the mix", file=sys.stderr)
                return 1
        time.sleep(0.2)
    print(f"fcwork: error: no answer from the trainer within {args.timeout:g} s (request {request} stays pending)",
          file=sys.stderr)
    return 1
