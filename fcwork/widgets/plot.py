"""A line chart drawn with Unicode braille dots: several series on one step axis, with a legend.

Braille gives 2x4 dots a cell, so an 80-column terminal still shows a readable loss curve.
Colours are the theme's semantic colours (primary, warning, success, ...), which Textual maps
down to 256 or 16 colours on terminals without truecolor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from fcwork.format import fmt_number
from fcwork.widgets.colors import theme_style

# Braille dot bits by (column in cell, row in cell).
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
GUTTER = 9  # columns left of the plot area (y labels); shared so stacked charts line up on x
RIGHT = 6  # columns right of the plot area (the mix strips' current weights), shared for the same reason
_LEVELS = " \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
PALETTE = ("primary", "warning", "success", "error", "foreground", "secondary-lighten-2", "accent")


@dataclass
class Line:
    """One series to draw: points on the step axis, a legend label and a theme colour name. A faint
    line (raw values under their smoothed curve) is drawn dim and left out of the legend."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = "primary"
    last: float | None = field(default=None)
    faint: bool = False


def smooth(ys: Sequence[float], weight: float = 0.9) -> list[float]:
    """An exponential moving average with TensorBoard's debiasing (the first points are not pulled
    toward 0): each value is `weight` of the average so far and 1 - `weight` of the new point."""
    out, avg, n = [], 0.0, 0
    for y in ys:
        if not math.isfinite(y):
            out.append(y)
            continue
        n += 1
        avg = weight * avg + (1 - weight) * y
        out.append(avg / (1 - weight ** n))
    return out


def legend_lines(title: str, lines: Sequence[Line], width: int, colors: dict[str, Style]) -> list[Text]:
    """The title and one entry per line ("━ code 3.21"), wrapped onto as many lines as they need;
    an entry is never cut (one wider than the plot is cropped)."""
    out = [Text(title, style=Style(bold=True))]
    for line in lines:
        if line.faint:
            continue
        last = line.last if line.last is not None else (line.ys[-1] if line.ys else None)
        entry = Text("\u2501 ", style=colors.get(line.color, Style()))
        entry.append(f"{line.label} {fmt_number(last) if last is not None else '-'}")
        if out[-1].cell_len and out[-1].cell_len + 2 + entry.cell_len > width:
            out.append(Text())
        if out[-1].cell_len:
            out[-1].append("  ")
        out[-1].append(entry)
    for t in out:
        t.truncate(width)
    return out


def _segment(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Dots on the straight line between two dots (Bresenham)."""
    out = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        out.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return out
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def _dot_columns(line: Line, x0: float, x1: float, y1: float, sx: float, sy: float, w: int, h: int) -> Iterator[tuple]:
    """The line's points reduced to the plot's resolution: for each dot column it reaches, the
    lowest and highest dot row, and the previous column's last dot (None after a gap). Drawing
    these costs the same for 100 points or 100,000. A point maps to dot
    (round((x - x0) * sx), round((y1 - y) * sy)), clamped to w x h dots."""
    col, lo, hi, prev_last, last = None, 0, 0, None, None
    inf = math.inf
    for x, y in zip(line.xs, line.ys):
        if x < x0 or x > x1 or y != y or y == inf or y == -inf:
            if col is not None:
                yield col, lo, hi, prev_last
            col, prev_last, last = None, None, None
            continue
        dx = int((x - x0) * sx + 0.5)
        if dx >= w:
            dx = w - 1
        dy = int((y1 - y) * sy + 0.5)
        if dy < 0:
            dy = 0
        elif dy >= h:
            dy = h - 1
        if dx == col:
            if dy < lo:
                lo = dy
            elif dy > hi:
                hi = dy
        else:
            if col is not None:
                yield col, lo, hi, prev_last
                prev_last = last
            col, lo, hi = dx, dy, dy
        last = (dx, dy)
    if col is not None:
        yield col, lo, hi, prev_last


def render_plot(lines: Sequence[Line], width: int, height: int, colors: dict[str, Style],
                x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
                title: str = "", empty: str = "no data yet") -> Text:
    """The chart as rich Text of `height` lines: legend, plot rows with a y axis, x axis labels;
    RIGHT columns are left blank after the plot area (where the mix strips put their weights)."""
    muted = colors.get("muted", Style())
    out = Text(no_wrap=True, overflow="crop")
    legend = legend_lines(title, lines, width, colors)[:max(1, height - 4)]  # keep 3 rows of plot
    out.append(Text("\n").join(legend))
    rows = height - 1 - len(legend)
    if rows < 1 or width < 12:
        return out
    xs_all = [x for ln in lines for x in ln.xs]
    ys_all = [y for ln in lines for y in ln.ys if math.isfinite(y)]
    if not ys_all:
        pad = max(0, (rows - 1) // 2)
        out.append("\n" * (pad + 1))
        out.append(empty.center(width)[:width], style=muted)
        out.append("\n" * (rows - pad))
        return out
    x0, x1 = x_range or (min(xs_all), max(xs_all))
    if x1 <= x0:
        x1 = x0 + 1
    y0, y1 = y_range or (min(ys_all), max(ys_all))
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    else:
        pad = (y1 - y0) * 0.04
        y0, y1 = (y0 - pad, y1 + pad) if not y_range else (y0, y1)
    labels = [fmt_number(y1), fmt_number((y0 + y1) / 2), fmt_number(y0)]
    gutter = max(GUTTER, max(len(s) for s in labels) + 1)
    cols = width - gutter - RIGHT
    dots_w, dots_h = cols * 2, rows * 4
    cells: dict[tuple[int, int], int] = {}
    owner: dict[tuple[int, int], str] = {}

    def put(px: int, py: int, color: tuple[str, bool]) -> None:
        key = (py // 4, px // 2)
        cells[key] = cells.get(key, 0) | _DOTS[px % 2][py % 4]
        owner[key] = color

    sx, sy = (dots_w - 1) / (x1 - x0), (dots_h - 1) / (y1 - y0)
    for line in sorted(lines, key=lambda ln: not ln.faint):  # faint ones first: the bright draw over them
        for col, lo, hi, first in _dot_columns(line, x0, x1, y1, sx, sy, dots_w, dots_h):
            for py in range(lo, hi + 1):  # every value that fell in this dot column
                put(col, py, (line.color, line.faint))
            if first is not None:  # the line from the previous column's last value
                for px, py in _segment(*first, col, lo if first[1] < lo else hi if first[1] > hi else first[1]):
                    put(px, py, (line.color, line.faint))

    def style_of(key: tuple[str, bool] | None) -> Style | None:
        if key is None:
            return None
        style = colors.get(key[0], Style())
        return style + Style(dim=True) if key[1] else style
    label_rows = {0: labels[0], rows // 2: labels[1], rows - 1: labels[2]}
    for r in range(rows):
        out.append("\n")
        out.append(label_rows.get(r, "").rjust(gutter - 1) + "\u2502", style=muted)
        run_color, run = None, []
        for c in range(cols):
            bits = cells.get((r, c), 0)
            color = owner.get((r, c)) if bits else None
            if color != run_color and run:
                out.append("".join(run), style=style_of(run_color))
                run = []
            run_color = color
            run.append(chr(0x2800 + bits) if bits else " ")
        if run:
            out.append("".join(run), style=style_of(run_color))
    out.append("\n")
    left, last = f"step {fmt_number(x0)}", fmt_number(x1)
    axis = " " * gutter + left + " " * max(1, cols - len(left) - len(last)) + last
    out.append(axis[:width], style=muted)
    return out


def render_strips(changes: Sequence[tuple[float, dict[str, float]]], domains: Sequence[str], width: int,
                  colors: dict[str, Style], palette: Sequence[str], x_range: tuple[float, float],
                  end: float | None = None) -> Text:
    """A weight history, one row per domain: each column's block height is the weight in force at
    that column's step (a full block is the largest weight shown), up to step `end`, on the same
    step axis as `render_plot`'s charts; the weight in force now after each row."""
    out = Text(no_wrap=True, overflow="crop")
    out.append("mix (share of each domain by step; now at the right)", style=Style(bold=True))
    out.truncate(width)
    cols = width - GUTTER - RIGHT
    if cols < 4:
        return out
    x0, x1 = x_range
    x1 = max(x1, x0 + 1)
    starts = [c[0] for c in changes]
    end = x1 if end is None else end
    top = max((w for _, mix in changes for w in mix.values()), default=1.0) or 1.0
    for i, dom in enumerate(domains):
        out.append("\n")
        out.append(dom[: GUTTER - 2].rjust(GUTTER - 1) + "\u2502", style=colors.get("muted", Style()))
        cells = []
        j = 0
        for c in range(cols):
            step = x0 + (c + 0.5) / cols * (x1 - x0)
            while j + 1 < len(starts) and starts[j + 1] <= step:
                j += 1
            if not changes or step < starts[0] or step > end:
                cells.append(" ")
                continue
            w = changes[j][1].get(dom, 0.0) / top
            cells.append(_LEVELS[min(8, max(1 if w > 0 else 0, round(w * 8)))])
        out.append("".join(cells), style=colors.get(palette[i % len(palette)], Style()))
        if changes:
            out.append(f" {changes[-1][1].get(dom, 0.0):.2f}".rjust(RIGHT)[:RIGHT])
    return out


def plot_colors(app) -> dict[str, Style]:
    """The palette's styles in the app's theme, and "muted" for axes and labels."""
    return {**{name: theme_style(app, name) for name in PALETTE}, "muted": theme_style(app, "foreground", dim=True)}


class MixStrips(Widget):
    """The mix history as one strip per domain, drawn on a step axis shared with a LinePlot."""

    DEFAULT_CSS = """
    MixStrips { height: auto; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.changes: list[tuple[float, dict[str, float]]] = []
        self.domains: list[str] = []
        self.x_range: tuple[float, float] = (0, 1)
        self.end: float | None = None

    def show(self, changes: list[tuple[float, dict[str, float]]], domains: list[str],
             x_range: tuple[float, float], end: float | None = None) -> None:
        resized = len(domains) != len(self.domains)
        self.changes, self.domains, self.x_range, self.end = changes, domains, x_range, end
        self.refresh(layout=resized)

    def get_content_height(self, container, viewport, width: int) -> int:
        return 1 + len(self.domains)

    def render(self) -> Text:
        return render_strips(self.changes, self.domains, self.content_size.width, plot_colors(self.app), PALETTE,
                             self.x_range, self.end)


class LinePlot(Widget):
    """Several series over steps, drawn in braille; fed by `plot()`, never per event."""

    DEFAULT_CSS = """
    LinePlot { height: 1fr; min-height: 4; }
    """

    def __init__(self, title: str = "", empty: str = "no data yet", **kw) -> None:
        super().__init__(**kw)
        self.title = title
        self.empty = empty
        self.lines: list[Line] = []
        self.x_range: tuple[float, float] | None = None
        self.y_range: tuple[float, float] | None = None

    def plot(self, lines: list[Line], x_range: tuple[float, float] | None = None,
             y_range: tuple[float, float] | None = None, title: str | None = None) -> None:
        self.lines, self.x_range, self.y_range = lines, x_range, y_range
        if title is not None:
            self.title = title
        self.refresh()

    def render(self) -> Text:
        size = self.content_size
        return render_plot(self.lines, size.width, size.height, plot_colors(self.app), self.x_range, self.y_range,
                           self.title, self.empty)
