"""Command palette providers: every pane action, pane switch and profile switch as a command."""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator

from textual.command import DiscoveryHit, Hit, Hits, Provider


class WorkbenchCommands(Provider):
    """Commands from the app's `palette_commands()`: (title, help, callback) triples."""

    def _commands(self) -> Iterator[tuple[str, str, Callable]]:
        commands = getattr(self.app, "palette_commands", None)
        return iter(commands() if commands else ())

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


def pane_commands(app, panes: dict) -> list[tuple[str, str, Callable]]:
    """Switch to each pane, and run each pane binding's action, as palette commands (`panes`:
    pane id to pane class)."""
    out = [(f"Show {pane.TITLE}", f"F{i} or {i}", partial(app.action_pane, pane_id))
           for i, (pane_id, pane) in enumerate(panes.items(), start=1)]
    for pane_id, pane in panes.items():
        for binding in pane.BINDINGS:
            keys = binding.key.split(",")[0]
            out.append((f"{pane.TITLE}: {binding.description}", f"key {keys} in the {pane.TITLE} pane",
                        partial(app.run_pane_action, pane_id, binding.action)))
    return out
