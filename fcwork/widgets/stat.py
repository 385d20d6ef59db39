"""One live number with its recent history: "grad norm 1.05" over a one-row sparkline, and the
sparkline's scale (lowest and highest value shown) under it. The value is never cropped: at a
narrow width the label gives way first (its short form, then nothing)."""

from __future__ import annotations

from typing import Sequence

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from fcwork.format import fmt_number
from fcwork.widgets.colors import theme_style

_LEVELS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"


def spark(values: Sequence[float], width: int) -> str:
    """The values (resampled to `width` columns, each the mean of its share) as block heights
    between their lowest and highest."""
    if width <= 0 or not values:
        return ""
    n = len(values)
    cols = []
    for c in range(min(width, n)):
        a, b = c * n // min(width, n), max((c + 1) * n // min(width, n), c * n // min(width, n) + 1)
        cols.append(sum(values[a:b]) / (b - a))
    lo, hi = min(cols), max(cols)
    span = hi - lo
    return "".join(_LEVELS[0 if span <= 0 else min(7, int((v - lo) / span * 7.999))] for v in cols)


def stat_lines(labels: Sequence[str], value: str | Sequence[str], values: Sequence[float],
               width: int) -> tuple[str, str, str]:
    """The three lines of a stat at `width`: label and value, sparkline, scale. `labels` and
    `value` (one string, or forms longest first) give way to shorter forms: a label with a shorter
    value before a value alone."""
    forms = [value] if isinstance(value, str) else list(value)
    head = next((f"{lb} {v}" for v in forms for lb in labels if len(lb) + 1 + len(v) <= width), forms[-1])
    line = spark(values, width)
    scale = ""
    if values:
        lo, hi = fmt_number(min(values)), fmt_number(max(values))
        scale = lo if lo == hi else f"{lo}\u2013{hi}"
        if len(scale) > width:
            scale = f"\u2264{hi}" if len(hi) < width else ""
    return head[:width] if len(head) > width else head, line, scale


class Stat(Widget):
    """A named number, its sparkline and its scale; fed by `show()` from the pane's timer."""

    DEFAULT_CSS = """
    Stat { height: 3; width: 1fr; padding-right: 1; }
    """

    def __init__(self, labels: Sequence[str], **kw) -> None:
        super().__init__(**kw)
        self.labels = tuple(labels)  # longest first: the name, then shorter forms for narrow widths
        self.value: tuple[str, ...] = ("-",)
        self.values: list[float] = []

    def show(self, value: str | Sequence[str], values: Sequence[float]) -> None:
        """The value (or its forms, longest first) and the recent values for the sparkline."""
        value = (value,) if isinstance(value, str) else tuple(value)
        values = list(values)
        if value != self.value or values != self.values:
            self.value, self.values = value, values
            self.refresh()

    def render(self) -> Text:
        head, line, scale = stat_lines(self.labels, self.value, self.values, self.content_size.width)
        out = Text(no_wrap=True, overflow="crop", end="")
        label, sep, value = head.rpartition(" ")
        out.append(label + sep, style=theme_style(self.app, "foreground", dim=True))
        out.append(value, style=Style(bold=True))
        out.append("\n")
        out.append(line, style=theme_style(self.app, "primary"))
        out.append("\n")
        out.append(scale, style=theme_style(self.app, "foreground", dim=True))
        return out
