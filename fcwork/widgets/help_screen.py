"""The `?` overlay: every key of the pane shown, then the keys that work everywhere."""

from __future__ import annotations

from typing import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

Section = tuple[str, Sequence[tuple[str, str]]]


def keys_table(sections: Sequence[Section]) -> Table:
    """Keys and what they do under a heading per section; the text column wraps, never crops."""
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(ratio=1, overflow="fold")
    for i, (title, rows) in enumerate(sections):
        if i:
            table.add_row("", "")
        table.add_row(Text(title, style="bold underline"), "")
        for keys, what in rows:
            table.add_row(Text(keys), Text(what))
    return table


class HelpScreen(ModalScreen[None]):
    """A scrolling list of keys; escape, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", priority=True)]

    def __init__(self, title: str, sections: Sequence[Section]) -> None:
        super().__init__()
        self.title_text = title
        self.sections = list(sections)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help-dialog"):
            yield Static(self.title_text, markup=False, classes="dialog-title")
            yield Label("up/down scroll   escape, ? or q: close", markup=False, classes="dialog-hint top-hint")
            with VerticalScroll(id="help-keys"):
                yield Static(keys_table(self.sections), id="help-table")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#help-keys").focus()

    def action_close(self) -> None:
        self.dismiss(None)
