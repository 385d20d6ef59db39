"""A horizontal bar for a fraction (0..1) drawn with eighth blocks, with the percentage after it;
or, when its `note` is set (the value it would show is invalid), that note instead."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

_EIGHTHS = " \u258f\u258e\u258d\u258c\u258b\u258a\u2589"


def bar_text(fraction: float, width: int) -> str:
    """`width` cells filled to `fraction`, with eighth-block precision at the end."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    text = "\u2588" * full + (_EIGHTHS[rest] if rest and full < width else "")
    return text.ljust(width)


class Bar(Widget):
    """A fraction as a bar and a percentage; `value` is set from outside (attributes down)."""

    DEFAULT_CSS = """
    Bar { height: 1; width: 1fr; color: $primary; }
    Bar.-changed { color: $warning; }
    Bar.-note { color: $error; }
    """

    value: reactive[float] = reactive(0.0)
    note: reactive[str] = reactive("")

    def watch_note(self, note: str) -> None:
        self.set_class(bool(note), "-note")

    def render(self) -> Text:
        width = self.content_size.width
        if self.note:
            return Text(self.note, no_wrap=True, overflow="ellipsis", end="")
        pct = f" {self.value * 100:5.1f}%"
        return Text(bar_text(self.value, max(0, width - len(pct))) + pct, no_wrap=True)
