"""Snapshots of every pane and dialog at 80x24 and 60x20 (panes also at 120x40) on a workspace of
long values: a long workspace name, a long error with a long path, five domains, big numbers.
No clock, no cursor blink. Pilot tests (test_tui_workbench, test_tui_keys) check the same screens
for text that must be whole; these catch everything else that moves.

Update with `pytest tests/tui/test_tui_snapshots.py --snapshot-update` after checking the
report; the SVGs under __snapshots__/ are text and diff readably.
"""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input

from tui_fixtures import RUN_DONE, make_app, make_long_workspace, settle, write_harness_evals

PANES = {"manifest": "f1", "tokenizer": "f2", "queue": "f3", "metrics": "f4", "eval": "f5"}
SIZES = {"80x24": (80, 24), "60x20": (60, 20), "120x40": (120, 40)}
SMALL = {"80x24": (80, 24), "60x20": (60, 20)}


def workspace(tmp_path):
    ws = make_long_workspace(tmp_path)
    write_harness_evals(ws)
    return ws


async def open_pane(pilot, app, key: str) -> None:
    await settle(pilot, app)
    await pilot.press(key)
    if key == "f3":
        await pilot.press("v")  # memory estimated for cpu: the same figures on every machine
    await settle(pilot, app)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pane", PANES)
def test_pane_snapshot(snap_compare, tmp_path, pane, size):
    app = make_app(workspace(tmp_path))

    async def run_before(pilot) -> None:
        await open_pane(pilot, app, PANES[pane])

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


# Pane states and dialogs: (pane key, what to do there), each shown at 80x24 and 60x20.
async def _queue_failed(pilot, app):
    app.query_one("#queue-table", DataTable).move_cursor(row=3)  # the long error, wrapped under the table


async def _entry_detail(pilot, app):
    app.query_one("#queue-table", DataTable).move_cursor(row=3)
    await pilot.press("enter")


async def _cancel_running(pilot, app):
    app.query_one("#queue-table", DataTable).move_cursor(row=2)
    await pilot.press("c")


async def _add_stage(pilot, app):
    await pilot.press("a")


async def _start_picker(pilot, app):
    await pilot.press("a", "down", "enter")  # anneal starts from base: where from?


async def _help(pilot, app):
    await pilot.press("question_mark")


async def _quit(pilot, app):
    await pilot.press("q")


async def _loss_per_domain(pilot, app):
    await pilot.press("l")


async def _invalid_weight(pilot, app):
    app.query_one("#mix-1", Input).focus()
    await pilot.press(".")


async def _pick_runs(pilot, app):
    await pilot.press("r", "down", "space")  # the second run unticked: it must still show


async def _export_picker(pilot, app):
    pane = app.panes["eval"]
    pane.run_ids, pane.chosen, pane._drawn = [RUN_DONE], True, None
    pane.redraw()  # now, not at the pane's next tick: the same screen every time
    ckpt = app.ws.runs_dir / RUN_DONE / "ckpt" / "step-300"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text("{}")
    await pilot.press("x")


async def _generate(pilot, app):
    from fcwork.widgets.generate_screen import GenerateScreen

    await app.push_screen(GenerateScreen(app.ws.root, RUN_DONE))
    await pilot.press(*"def f")
    app.screen.query_one("#gen-status").update(
        "fcwork: error: runs/20250101-100000-base/ckpt/step-300: no checkpoint state (state.json) yet")


STATES = {
    "queue-failed-entry": ("f3", _queue_failed),
    "entry-detail": ("f3", _entry_detail),
    "cancel-confirm": ("f3", _cancel_running),
    "add-picker": ("f3", _add_stage),
    "start-picker": ("f3", _start_picker),
    "help": ("f3", _help),
    "quit-confirm": ("f1", _quit),
    "invalid-weight": ("f1", _invalid_weight),
    "loss-per-domain": ("f4", _loss_per_domain),
    "run-picker": ("f5", _pick_runs),
    "export-picker": ("f5", _export_picker),
    "generate": ("f5", _generate),
}


@pytest.mark.parametrize("size", SMALL)
@pytest.mark.parametrize("state", STATES)
def test_state_snapshot(snap_compare, tmp_path, state, size):
    app = make_app(workspace(tmp_path))
    key, act = STATES[state]

    async def run_before(pilot) -> None:
        await open_pane(pilot, app, key)
        await act(pilot, app)
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=SMALL[size], run_before=run_before)
