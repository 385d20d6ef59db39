"""Snapshots of every pane at 80x24 and 120x40 on a fixed workspace (no clock, no cursor blink).

Update with `pytest tests/tui/test_tui_snapshots.py --snapshot-update` after checking the
report; the SVGs under __snapshots__/ are text and diff readably.
"""

from __future__ import annotations

import pytest

from tui_fixtures import make_app, make_workspace, settle, write_harness_evals

PANES = {"manifest": "f1", "tokenizer": "f2", "queue": "f3", "metrics": "f4", "eval": "f5"}
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pane", PANES)
def test_pane_snapshot(snap_compare, tmp_path, pane, size):
    ws = make_workspace(tmp_path / "ws")
    if pane == "eval":
        write_harness_evals(ws)
    app = make_app(ws)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press(PANES[pane])
        if pane == "queue":
            await pilot.press("v")  # memory estimated for cpu: the same figures on every machine
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


def test_dialog_snapshot(snap_compare, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("f3", "v", "down", "down", "x")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_generate_screen_snapshot(snap_compare, tmp_path):
    from fcwork.widgets.generate_screen import GenerateScreen

    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("f5")
        await app.push_screen(GenerateScreen(ws.root, "20250101-100000-base"))
        await pilot.press("d", "e", "f", "space", "f")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
