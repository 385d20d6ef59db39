"""A rich progress display behind the engine's `progress(label, done, total)` callbacks."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def rich_progress(console: Console | None = None) -> Iterator[Callable[[str, int, int], None]]:
    """Yield a callback: a label with a total gets a bar; a label with total 0 is a status line."""
    console = console or Console(stderr=True)
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description:<24}"), BarColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    )
    tasks: dict[str, int] = {}
    status = {"task": None}

    def update(label: str, done: int, total: int) -> None:
        if total <= 0:
            if status["task"] is not None:
                progress.update(status["task"], completed=1, total=1)
            status["task"] = progress.add_task(label, total=None)
            return
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done, total=total)

    with progress:
        yield update
        if status["task"] is not None:
            progress.update(status["task"], completed=1, total=1)
