"""Live terminal views for the CLI: follow one run's events.jsonl, or the queue's entries.

Both tail the files the trainer and the supervisor write (never the processes), so what
they show is what a reattaching TUI would replay.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from engine.jobs.history import RunHistory
from engine.jobs.protocol import EntryState, Event, MixPolicy
from engine.jobs.rundir import RunDir, RunFollower
from engine.mix import describe
from fcwork.format import probe_summary, suggestion_lines

REFRESH_S = 0.25


def _fields(h: RunHistory, state: str = "") -> dict[str, str]:
    """The progress bar's text columns for a run's history."""
    loss = f"loss {h.loss:.3f}" if h.loss is not None else "loss -"
    tps = f"{h.tokens_per_s:,.0f} tok/s" if h.tokens_per_s is not None else "- tok/s"
    return {"loss": loss, "tps": tps, "state": state or h.state or "waiting"}


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]:<12}"), TextColumn("{task.fields[tps]:>14}"),
        TextColumn("{task.fields[state]:<9}"), TimeRemainingColumn(),
        console=console, refresh_per_second=4,
    )


def follow_run(run_dir: Path, done: Callable[[], bool], console: Console | None = None, label: str = "") -> RunHistory:
    """Show one run's progress until `done()` is true (then read the last events); returns its history."""
    console = console or Console(stderr=True)
    tail = RunFollower(RunDir(run_dir))
    h = tail.history
    with _progress(console) as progress:
        task = progress.add_task(label or tail.run.id, total=h.max_steps or None, **_fields(h))
        while True:
            finished = done()
            for ev in tail.poll():
                if ev.get("type") == Event.ERROR:
                    progress.console.print(f"[red]error[/] ({ev.get('source', 'trainer')}): {ev.get('message', '')}")
                elif ev.get("type") == Event.EVAL:
                    progress.console.print(eval_line(ev), highlight=False)
                elif ev.get("type") == Event.MIX:
                    auto = " (auto)" if ev.get("source") == MixPolicy.AUTO else ""
                    progress.console.print(f"mix from step {ev.get('step')}{auto}: {describe(ev.get('mix', {}), digits=2)}")
                elif ev.get("type") == Event.SUGGESTION:
                    head, _ = suggestion_lines(ev)
                    hint = "" if ev.get("auto") else f" (fcwork mix {tail.run.id} --accept-suggestion)"
                    progress.console.print(head.replace(" (a accepts)", hint) + "".join(
                        f"\n  {r}" for r in (ev.get("reasons") or {}).values()), highlight=False, markup=False)
            progress.update(task, completed=h.step, total=h.max_steps or None, **_fields(h))
            if finished:
                return h
            time.sleep(REFRESH_S)


def follow_queue(ws, ids: list[int], console: Console | None = None,
                 stop: Callable[[], bool] = lambda: False) -> dict[int, RunFollower]:
    """Show the given queue entries (one bar each) until none is queued or running, or `stop()`."""
    from engine.jobs.queue import StageQueue, waiting_message

    console = console or Console(stderr=True)
    queue = StageQueue(ws)
    tails: dict[int, RunFollower] = {}
    tasks: dict[int, int] = {}
    reported: set[int] = set()
    with _progress(console) as progress:
        while True:
            everything = queue.read()
            entries = {e.id: e for e in everything if e.id in ids}
            for eid in ids:
                entry = entries.get(eid)
                if entry is None:
                    continue
                if eid not in tasks:
                    tasks[eid] = progress.add_task(f"{entry.stage} (#{eid})", total=None, loss="loss -", tps="- tok/s",
                                                   state=entry.state)
                if entry.run_id and eid not in tails:
                    tails[eid] = RunFollower(RunDir(ws.runs_dir / entry.run_id))
                tail = tails.get(eid)
                if tail is not None:
                    tail.poll()
                    h = tail.history
                    progress.update(tasks[eid], completed=h.step, total=h.max_steps or None, **_fields(h, entry.state))
                else:
                    progress.update(tasks[eid], state=entry.state)
                if entry.state in EntryState.FINAL and eid not in reported:
                    reported.add(eid)
                    colour = {EntryState.DONE: "green", EntryState.FAILED: "red"}.get(entry.state, "yellow")
                    progress.console.print(f"[{colour}]{entry.stage}: {entry.state}[/] {entry.message}")
            if stop() or all(entries.get(i) is None or entries[i].state in EntryState.FINAL for i in ids):
                return tails
            held = _held(queue, [e for e in entries.values() if e.state in EntryState.ACTIVE], everything)
            if held:
                for entry, dep in held:
                    progress.console.print(f"[yellow]{entry.stage}: not started[/] {waiting_message(dep)}")
                return tails
            time.sleep(REFRESH_S)


def _held(queue, unfinished: list, everything: list) -> list[tuple]:
    """[(entry, the cancelled or failed entry it waits for)] when every unfinished entry waits on
    one (nothing runs them until the user resumes it), else []."""
    held = []
    for entry in unfinished:
        dep = queue.waiting_for(entry, everything) if entry.state == EntryState.QUEUED else None
        if dep is None or dep.state not in EntryState.RESUMABLE:
            return []
        held.append((entry, dep))
    return held


def eval_line(ev: dict) -> str:
    """A trainer eval event as one line: held-out loss, bits per byte and the probe scores."""
    line = f"eval at step {ev.get('step')}: held-out loss {ev.get('loss', float('nan')):.4f}"
    if isinstance(ev.get("bpb"), (int, float)):
        line += f", {ev['bpb']:.3f} bits/byte"
    if ev.get("probes"):
        line += f"; {probe_summary(ev['probes'])}"
    if ev.get("probe_error"):
        line += f"; probes failed: {ev['probe_error']}"
    return line
