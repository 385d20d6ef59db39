"""Image-text data in the workbench: the half-block preview widget (snapshot), and the Manifest pane
showing an image domain's counts, its skips and a sample image."""

from __future__ import annotations

import numpy as np
import pytest
from rich.style import Style
from textual.app import App, ComposeResult

from fcwork.widgets.halfblock import HALF, ImagePreview, half_block_lines
from tui_fixtures import PROFILE, make_app, show_pane, wait_for


def _chart_pixels(size: int = 32) -> np.ndarray:
    from engine.data.builtin.charts import draw_chart
    from engine.data.imagesources import decode_image

    return decode_image(draw_chart("bar", [3, 9, 5, 1], ["North", "South", "East", "West"], (31, 119, 180)),
                        size, 10**8)


def test_half_blocks_put_two_pixels_in_a_cell():
    pixels = np.zeros((4, 2, 3), np.uint8)
    pixels[0] = (255, 0, 0)  # row 0 red over row 1 black; rows 2 and 3 black over white
    pixels[3] = (255, 255, 255)
    lines = half_block_lines(pixels, 2, 2)
    assert [line.plain for line in lines] == [HALF * 2, HALF * 2]
    first = lines[0].spans[0].style
    assert isinstance(first, Style) and first.color.triplet == (255, 0, 0) and first.bgcolor.triplet == (0, 0, 0)
    assert lines[1].spans[0].style.bgcolor.triplet == (255, 255, 255)
    assert half_block_lines(np.zeros((64, 64, 3), np.uint8), 10, 3)[0].cell_len == 6  # aspect kept: 6 x 6 px
    assert half_block_lines(np.zeros((0, 0, 3), np.uint8), 4, 4) == []


class PreviewApp(App):
    def compose(self) -> ComposeResult:
        yield ImagePreview(id="p")

    def on_mount(self) -> None:
        preview = self.query_one(ImagePreview)
        preview.styles.width, preview.styles.height = 32, 17
        preview.show(_chart_pixels(), "A bar chart of sales: North 3, South 9, East 5, West 1.")


def test_preview_snapshot(snap_compare):
    assert snap_compare(PreviewApp(), terminal_size=(34, 18))


IMAGE_SOURCES = """
[[sources]]
name = "charts"
domain = "caption"
format = "builtin:charts"
max_docs = 12

[[sources]]
name = "scans"
domain = "caption"
format = "webdataset"
path = "{tar}"
image = "auto"
"""


@pytest.mark.anyio
async def test_manifest_pane_shows_image_counts_and_a_sample(tmp_path):
    from engine.data.imagedata import build_images
    from engine.workspace import Workspace
    from tests.test_imagedata import make_tar

    ws = Workspace(tmp_path / "ws")
    ws.init()
    make_tar(tmp_path / "scans.tar")
    text = PROFILE.replace("chat = 0.1\n", "chat = 0.1\ncaption = 0\n", 1).replace(
        "[tokenizer]", "[data]\nimage_size = 16\nmax_image_pixels = 20_000_000\n\n[tokenizer]")
    ws.profile_path("default").write_text(text + IMAGE_SOURCES.format(tar=tmp_path / "scans.tar"), encoding="utf-8")
    prof = ws.load_profile("default")
    build_images(ws, prof)
    app = make_app(ws)
    async with app.run_test(size=(100, 60)) as pilot:
        await show_pane(pilot, app, "f1")
        preview = app.query_one("#image-preview", ImagePreview)
        await wait_for(pilot, lambda: preview._pixels is not None, what="the sample image")
        info = str(app.query_one("#image-info").render())
        assert "caption 16 px: 15 images" in info
        assert "2 decompression bomb" in info and "1 corrupt image" in info and "1 no image member" in info
        assert "sample: A " in info and preview._pixels.shape == (16, 16, 3)
        table = app.query_one("#sources")
        assert "12 img" in [str(c) for c in table.get_row("charts")]
