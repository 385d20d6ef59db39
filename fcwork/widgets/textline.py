"""One line of plain text that repaints without a layout pass (Static.update relayouts the
screen, too costly for labels a live pane rewrites a few times a second)."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class TextLine(Widget):
    """A single line of text (never markup), cropped with an ellipsis."""

    DEFAULT_CSS = """
    TextLine { height: 1; width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
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


class PartsLine(Widget):
    """One line made of parts of different importance: the parts that fit are shown, in their
    order, the least important left out first (a value is never cut in the middle)."""

    DEFAULT_CSS = """
    PartsLine { height: 1; width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, sep: str = "  ", **kw) -> None:
        super().__init__(**kw)
        self.sep = sep
        self.parts: list[tuple[str, int]] = []

    def set(self, parts: list[tuple[str, int]]) -> None:
        """(text, rank) pairs in display order; rank 0 is kept longest."""
        if parts != self.parts:
            self.parts = parts
            self.refresh()

    @property
    def text(self) -> str:
        return self.sep.join(t for t, _ in self.parts if t)

    def fitted(self, width: int) -> str:
        shown = [(t, r) for t, r in self.parts if t]
        while shown and len(self.sep.join(t for t, _ in shown)) > width and len(shown) > 1:
            worst = max(range(len(shown)), key=lambda i: (shown[i][1], i))
            shown.pop(worst)
        return self.sep.join(t for t, _ in shown)

    def render(self) -> Text:
        return Text(self.fitted(self.content_size.width), no_wrap=True, overflow="ellipsis", end="")
