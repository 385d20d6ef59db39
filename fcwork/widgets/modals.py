"""Small modal screens: confirm a destructive action, pick one item, pick several, read a long text."""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, OptionList, SelectionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no to one question; y/enter confirm, n/escape decline."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", priority=True),
        Binding("n,escape", "answer(False)", "No", priority=True),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, markup=False, classes="dialog-title")
            yield Label("y/enter: yes   n/escape: no", markup=False, classes="dialog-hint")
        yield Footer()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PickScreen(ModalScreen[Any]):
    """Choose one of a list with the arrows and enter; escape cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: Sequence[tuple[str, Any]], empty: str = "nothing to choose") -> None:
        super().__init__()
        self.title_text = title
        self.options = list(options)
        self.empty = empty

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, markup=False, classes="dialog-title")
            if self.options:
                yield OptionList(*[Option(Text(label), id=str(i)) for i, (label, _) in enumerate(self.options)])
            else:
                yield Label(self.empty, markup=False, classes="dialog-hint")
            yield Label("enter: choose   escape: cancel", markup=False, classes="dialog-hint")
        yield Footer()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.options[int(event.option.id)][1])

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickManyScreen(ModalScreen[Any]):
    """Tick several items with space, enter to accept; escape cancels (None)."""

    BINDINGS = [
        Binding("enter", "accept", "Accept", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str, options: Sequence[tuple[str, Any, bool]]) -> None:
        super().__init__()
        self.title_text = title
        self.options = list(options)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, markup=False, classes="dialog-title")
            yield SelectionList(*[(Text(label), i, on) for i, (label, _, on) in enumerate(self.options)])
            yield Label("space: tick   enter: accept   escape: cancel", markup=False, classes="dialog-hint")
        yield Footer()

    def action_accept(self) -> None:
        picked = self.query_one(SelectionList).selected
        self.dismiss([self.options[i][1] for i in sorted(picked)])

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """A long text to read (an entry's whole message, its log), scrolled with the arrows; escape,
    enter or q closes it."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close", priority=True)]

    def __init__(self, title: str, body: Text | str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide-dialog"):
            yield Static(self.title_text, markup=False, classes="dialog-title")
            yield Label("up/down scroll   escape/enter/q: close", markup=False, classes="dialog-hint top-hint")
            with VerticalScroll(classes="text-body"):
                yield Static(self.body, markup=False, classes="text-screen-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
