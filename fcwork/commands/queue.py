"""`fcwork queue add|list|start|cancel|resume|remove|move`: the workspace's stage queue."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Column, Table

from engine.errors import FcError, QueueError
from engine.jobs.procs import SUPERVISOR_LOG, supervisor_pid
from engine.jobs.protocol import EntryState
from engine.jobs.queue import StageQueue
from engine.jobs.rundir import RunDir
from engine.workspace import Workspace

STATE_STYLE = {EntryState.QUEUED: "cyan", EntryState.RUNNING: "bold blue", EntryState.DONE: "green",
               EntryState.FAILED: "red", EntryState.CANCELLED: "yellow"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="queue training stages and run them in the background")
    ps = p.add_subparsers(dest="queue_cmd", metavar="ACTION", required=True)
    a = ps.add_parser("add", help="queue stages of a profile (in the order given)")
    a.add_argument("profile")
    a.add_argument("stages", nargs="+", metavar="STAGE")
    a.add_argument("--from", dest="init_from", default="", metavar="STAGE_OR_RUN",
                   help="start from this stage's latest finished run, or this run (id or prefix), "
                        "instead of the stage's init_from")
    a.add_argument("--start", action="store_true", help="also start the supervisor")
    a.set_defaults(func=cmd_add)
    ps.add_parser("list", help="entries with state, run and progress").set_defaults(func=cmd_list)
    ps.add_parser("start", help="start the detached supervisor (no-op when one runs)").set_defaults(func=cmd_start)
    c = ps.add_parser("cancel", help="cancel a queued entry, or stop a running one at a checkpoint")
    c.add_argument("id", type=int)
    c.set_defaults(func=cmd_cancel)
    r = ps.add_parser("resume", help="queue a cancelled or failed entry again (resumes its run)")
    r.add_argument("id", type=int)
    r.add_argument("--start", action="store_true", help="also start the supervisor")
    r.set_defaults(func=cmd_resume)
    d = ps.add_parser("remove", help="drop an entry (its run folder stays)")
    d.add_argument("id", type=int)
    d.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    d.set_defaults(func=cmd_remove)
    m = ps.add_parser("move", help="reorder: up, down, or a position (1 = first)")
    m.add_argument("id", type=int)
    m.add_argument("where", metavar="up|down|N")
    m.set_defaults(func=cmd_move)


def _queue(args: argparse.Namespace) -> StageQueue:
    q = StageQueue(Workspace.open(args.workspace))
    if args.queue_cmd != "start":
        warn_orphans(q)
    return q


def warn_orphans(q: StageQueue) -> None:
    """Say so when an entry is marked running but no supervisor watches it (the command goes on)."""
    try:
        orphans = q.orphans()
    except QueueError:
        return  # the command itself reports the broken file
    for e in orphans:
        print(f"fcwork: warning: entry #{e.id} ({e.stage}) is marked running but no supervisor is watching it "
              "(killed, or the machine restarted); `fcwork queue start` takes it up again", file=sys.stderr)


def cmd_add(args: argparse.Namespace) -> int:
    q = _queue(args)
    entries = q.add_many(args.profile, args.stages, args.init_from)
    prof = q.ws.load_profile(args.profile)
    for entry in entries:
        print(f"queued #{entry.id}: {entry.profile} / {entry.stage}" + (f" from {entry.init_from}" if entry.init_from else ""))
        print_passes(q.ws, prof, entry.stage, Console(), indent="  ")
    return _maybe_start(q, args.start)


def print_passes(ws: Workspace, profile, stage: str, console: Console, indent: str = "") -> list[str]:
    """`passes over each domain: science 1.2x, ...` for a stage, and a warning line per domain read more
    often than data.warn_epochs (engine.data.epochs); returns the warnings."""
    from engine.data.epochs import epoch_warnings, format_passes, stage_passes, stage_tokens

    rows = stage_passes(ws, profile, stage)
    basis = sorted({r.basis for r in rows})
    console.print(f"{indent}passes over each domain ({stage_tokens(profile.stage(stage)):,} tokens; domain tokens "
                  f"from {', '.join(basis)}): {format_passes(rows)}", highlight=False, soft_wrap=True)
    warnings = epoch_warnings(profile, stage, rows)
    for line in warnings:
        Console(stderr=True).print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    return warnings


def _maybe_start(q: StageQueue, start: bool) -> int:
    if start:
        print(f"supervisor running (pid {q.start()}); log: {q.ws.root / SUPERVISOR_LOG}")
    elif supervisor_pid(q.ws) is None:
        print("the supervisor is not running: `fcwork queue start` runs the queue")
    return 0


def entry_progress(q: StageQueue, run_id: str) -> str:
    """`step/total` of an entry's run ("-" before it has one)."""
    if not run_id:
        return "-"
    try:
        h = RunDir(q.ws.runs_dir / run_id).summary()
    except (FcError, OSError) as exc:  # a damaged run shows in the table, it does not end the listing
        return f"? ({exc})"[:40]
    return f"{h.step}/{h.max_steps}" if h.max_steps else str(h.step)


def cmd_list(args: argparse.Namespace) -> int:
    q = _queue(args)
    entries = q.read()
    pid = supervisor_pid(q.ws)
    table = Table("id", "profile", "stage", "state", Column("run", overflow="fold"), "step/total", "message",
                  title=f"queue of {q.ws.root} — supervisor " + (f"running (pid {pid})" if pid else "not running"))
    for e in entries:
        style = STATE_STYLE.get(e.state, "")
        restarts = f" (restarts {e.restarts})" if e.restarts else ""
        stage = e.stage + (f" from {e.init_from}" if e.init_from else "")
        table.add_row(str(e.id), e.profile, stage, f"[{style}]{e.state}[/]", e.run_id or "-",
                      entry_progress(q, e.run_id), e.message + restarts)
    Console().print(table if entries else f"the queue of {q.ws.root} is empty")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    q = _queue(args)
    pending = sum(e.state in EntryState.ACTIVE for e in q.read())
    pid = q.start()
    print(f"supervisor running (pid {pid}), {pending} entr{'y' if pending == 1 else 'ies'} to run; "
          f"log: {q.ws.root / SUPERVISOR_LOG}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    entry = _queue(args).cancel(args.id)
    if entry.state == EntryState.RUNNING:
        print(f"#{entry.id}: stop requested; it checkpoints, then shows as cancelled")
    else:
        print(f"#{entry.id}: {entry.state}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    q = _queue(args)
    entry = q.resume(args.id)
    print(f"#{entry.id}: queued ({entry.message})")
    return _maybe_start(q, args.start)


def cmd_remove(args: argparse.Namespace) -> int:
    q = _queue(args)
    entry = q.get(args.id)
    if not args.yes:
        if not sys.stdin.isatty():
            raise QueueError(f"{q.path}: remove #{args.id}: confirmation needed; pass --yes when not at a terminal")
        answer = input(f"remove #{entry.id} ({entry.profile} / {entry.stage}, {entry.state})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("kept")
            return 1
    q.remove(args.id)
    print(f"removed #{entry.id}" + (f" (run folder runs/{entry.run_id} kept)" if entry.run_id else ""))
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    q = _queue(args)
    where: str | int = args.where
    if where not in ("up", "down"):
        try:
            where = int(where) - 1
        except ValueError:
            raise QueueError(f"{q.path}: move: expected up, down or a position (1 = first), got {args.where!r}") from None
        if where < 0:
            raise QueueError(f"{q.path}: move: expected a position of 1 or more, got {args.where}")
    new = q.move(args.id, where)
    print(f"#{args.id} is now at position {new + 1}")
    return 0
