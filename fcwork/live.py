"""Live terminal views for the CLI: follow one run's events.jsonl, or the queue's entries.

Both tail the files the trainer and the supervisor write (never the processes), so what
they show is what a reattaching TUI would replay.
"""

from __future__ import annotations

import time
from engine.compat import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

REFRESH_S = 0.25


@dataclass
class RunTail:
    """Incremental reader of one run's events: the latest step, status, evals and mixes."""

    run_dir: Path
    offset: int = 0
    step: int = 0
    max_steps: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    state: str = ""
    message: str = ""
    evals: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.max_steps = stage_max_steps(self.run_dir)

    def poll(self) -> list[dict]:
        """Read what was appended since the last poll; returns the new events."""
        from engine.jobs.events import read_events

        path = self.run_dir / "events.jsonl"
        if not path.exists():
            return []
        events, self.offset = read_events(path, self.offset)
        for ev in events:
            kind = ev.get("type")
            if kind == "step":
                self.step = int(ev.get("step", self.step))
                self.loss = ev.get("loss", self.loss)
                self.tokens_per_s = ev.get("tokens_per_s", self.tokens_per_s)
            elif kind == "status":
                self.state = ev.get("state", self.state)
                self.message = ev.get("message", "") or ""
                self.max_steps = int(ev.get("max_steps") or self.max_steps)
                if isinstance(ev.get("step"), int):
                    self.step = ev["step"]
            elif kind == "eval":
                self.evals.append(ev)
            elif kind == "error":
                self.errors.append(ev)
        return events

    def fields(self) -> dict[str, str]:
        loss = f"loss {self.loss:.3f}" if isinstance(self.loss, (int, float)) else "loss -"
        tps = f"{self.tokens_per_s:,.0f} tok/s" if isinstance(self.tokens_per_s, (int, float)) else "- tok/s"
        return {"loss": loss, "tps": tps, "state": self.state or "waiting"}


def stage_max_steps(run_dir: Path) -> int:
    """`[stage] max_steps` of a run's frozen stage.toml (0 when unreadable)."""
    try:
        data = tomllib.loads((Path(run_dir) / "stage.toml").read_text(encoding="utf-8"))
        return int(data.get("stage", {}).get("max_steps", 0))
    except (OSError, tomllib.TOMLDecodeError, ValueError, TypeError):
        return 0


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]:<12}"), TextColumn("{task.fields[tps]:>14}"),
        TextColumn("{task.fields[state]:<9}"), TimeRemainingColumn(),
        console=console, refresh_per_second=4,
    )


def follow_run(run_dir: Path, done: Callable[[], bool], console: Console | None = None, label: str = "") -> RunTail:
    """Show one run's progress until `done()` is true (then read the last events)."""
    console = console or Console(stderr=True)
    tail = RunTail(Path(run_dir))
    with _progress(console) as progress:
        task = progress.add_task(label or tail.run_dir.name, total=tail.max_steps or None, **tail.fields())
        while True:
            finished = done()
            for ev in tail.poll():
                if ev.get("type") == "error":
                    progress.console.print(f"[red]error[/] ({ev.get('source', 'trainer')}): {ev.get('message', '')}")
                elif ev.get("type") == "eval":
                    progress.console.print(eval_line(ev), highlight=False)
                elif ev.get("type") == "mix":
                    progress.console.print(f"mix from step {ev.get('step')}: {_fmt_mix(ev.get('mix', {}))}")
            progress.update(task, completed=tail.step, total=tail.max_steps or None, **tail.fields())
            if finished:
                return tail
            time.sleep(REFRESH_S)


def follow_queue(ws, ids: list[int], console: Console | None = None,
                 stop: Callable[[], bool] = lambda: False) -> dict[int, RunTail]:
    """Show the given queue entries (one bar each) until none is queued or running, or `stop()`."""
    from engine.jobs.queue import StageQueue, waiting_message

    console = console or Console(stderr=True)
    queue = StageQueue(ws)
    tails: dict[int, RunTail] = {}
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
                    tails[eid] = RunTail(ws.runs_dir / entry.run_id)
                tail = tails.get(eid)
                if tail is not None:
                    tail.poll()
                    fields = tail.fields()
                    fields["state"] = entry.state
                    progress.update(tasks[eid], completed=tail.step, total=tail.max_steps or None, **fields)
                else:
                    progress.update(tasks[eid], state=entry.state)
                if entry.state in ("done", "failed", "cancelled") and eid not in reported:
                    reported.add(eid)
                    colour = {"done": "green", "failed": "red"}.get(entry.state, "yellow")
                    progress.console.print(f"[{colour}]{entry.stage}: {entry.state}[/] {entry.message}")
            if stop() or all(entries.get(i) is None or entries[i].state in ("done", "failed", "cancelled")
                             for i in ids):
                return tails
            held = _held(queue, [e for e in entries.values() if e.state in ("queued", "running")], everything)
            if held:
                for entry, dep in held:
                    progress.console.print(f"[yellow]{entry.stage}: not started[/] {waiting_message(dep)}")
                return tails
            time.sleep(REFRESH_S)


def _held(queue, unfinished: list, everything: list) -> list[tuple]:
    """[(entry, the cancelled or failed entry it waits for)] when every unfinished entry waits on
    one (nothing runs them until the user resumes it), else []."""
    from engine.jobs.queue import RESUMABLE_STATES

    held = []
    for entry in unfinished:
        dep = queue.waiting_for(entry, everything) if entry.state == "queued" else None
        if dep is None or dep.state not in RESUMABLE_STATES:
            return []
        held.append((entry, dep))
    return held


def _fmt_mix(mix: dict) -> str:
    return " ".join(f"{d}={w:.2f}" for d, w in mix.items())


def eval_line(ev: dict) -> str:
    """A trainer eval event as one line: held-out loss, bits per byte and the probe scores."""
    from fcwork.commands.eval import probe_summary

    line = f"eval at step {ev.get('step')}: held-out loss {ev.get('loss', float('nan')):.4f}"
    if isinstance(ev.get("bpb"), (int, float)):
        line += f", {ev['bpb']:.3f} bits/byte"
    if ev.get("probes"):
        line += f"; {probe_summary(ev['probes'])}"
    if ev.get("probe_error"):
        line += f"; probes failed: {ev['probe_error']}"
    return line
