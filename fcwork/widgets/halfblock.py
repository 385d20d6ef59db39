"""An image drawn in the terminal with half blocks: each cell is "▀" with the upper pixel as its
foreground colour and the lower one as its background, so a cell shows two pixels. Works in any
terminal with colour, over SSH too (no sixel or kitty protocol needed); Rich turns the truecolor
into the nearest of 256 or 16 colours where the terminal has fewer.

`ImagePreview.show(pixels, caption)` takes uint8 [H, W, 3] pixels (a NumPy array or nested lists);
the image is scaled (nearest pixel, aspect kept) to the widget's size and the caption, cut to
the width, goes on the line under it.
"""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

HALF = "\u2580"  # upper half block


def half_block_lines(pixels: Any, cols: int, rows: int) -> list[Text]:
    """The image as `rows` lines of at most `cols` half-block cells (2 * rows pixels high), scaled by
    nearest pixel so its aspect is kept; empty when there is no room or no image."""
    import numpy as np

    arr = np.asarray(pixels, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] < 3 or cols < 1 or rows < 1 or not arr.size:
        return []
    h, w = arr.shape[:2]
    scale = min(cols / w, 2 * rows / h)
    out_w, out_h = max(1, int(w * scale)), max(2, int(h * scale) // 2 * 2)
    ys = (np.arange(out_h) * h // out_h).clip(0, h - 1)
    xs = (np.arange(out_w) * w // out_w).clip(0, w - 1)
    small = arr[ys][:, xs, :3]
    lines = []
    for y in range(0, out_h, 2):
        line = Text()
        for top, bottom in zip(small[y], small[y + 1]):
            line.append(HALF, Style(color=f"rgb({top[0]},{top[1]},{top[2]})",
                                    bgcolor=f"rgb({bottom[0]},{bottom[1]},{bottom[2]})"))
        lines.append(line)
    return lines


class ImagePreview(Widget):
    """A sample image in half blocks with its caption under it (see the module docstring)."""

    DEFAULT_CSS = """
    ImagePreview { width: 26; height: 13; }
    """

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._pixels: Any = None
        self._caption = ""

    def show(self, pixels: Any, caption: str = "") -> None:
        """Draw `pixels` (uint8 [H, W, 3]) with `caption`; None clears the preview."""
        self._pixels, self._caption = pixels, caption
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        rows = height - 1 if self._caption else height
        lines = [] if self._pixels is None else half_block_lines(self._pixels, width, rows)
        if self._caption:
            cut = self._caption if len(self._caption) <= width else self._caption[: max(width - 1, 0)] + "\u2026"
            lines.append(Text(cut, style="dim"))
        return Text("\n").join(lines)
