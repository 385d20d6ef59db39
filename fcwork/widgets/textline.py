"""One line of plain text that repaints without a layout pass (Static.update relayouts the
screen, too costly for labels a live pane rewrites a few times a second)."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class TextLine(Widget):
    """A single line of text (never markup), cropped with an ellipsis."""

    DEFAULT_CSS = """
    TextLine { height: 1; width: 1fr; }
    """

    def __init__(self, text: str = "", **kw) -> None:
        super().__init__(**kw)
        self._text = text

    def set(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.refresh()

    @property
    def text(self) -> str:
        return self._text

    def render(self) -> Text:
        return Text(self._text, no_wrap=True, overflow="ellipsis", end="")
