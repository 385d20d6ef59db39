"""The Metrics pane's mix suggestion: shown under the live mix with its reasons (snapshot), and `a`
sends it as a control request, the same request a Manifest mix edit writes (Pilot)."""

from __future__ import annotations

import tomllib

import pytest

from engine.jobs.control import request_path
from engine.jobs.rundir import RunDir
from tui_fixtures import (RUN_LIVE, T0, make_app, make_workspace, notifications, requests_of, settle, wait_for,
                          write_events)

SUGGESTED = {"science": 0.15, "code": 0.4, "chess": 0.2, "data": 0.15, "chat": 0.1}
SUGGESTION = {
    "type": "suggestion", "time": T0 + 100.5, "step": 100, "auto": False, "mix": SUGGESTED,
    "current": {"science": 0.2, "code": 0.4, "chess": 0.1, "data": 0.2, "chat": 0.1},
    "reasons": {"chess": "chess: held-out 4.100 bpb, 22% above the mean, still falling 1.9x the others' rate",
                "science": "science: held-out 3.100 bpb, 8% below the mean (falling 0.6x the others' rate)",
                "data": "data: held-out 3.000 bpb, 11% below the mean (falling 0.8x the others' rate)"},
}


def suggesting_workspace(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    write_events(ws.runs_dir / RUN_LIVE / "events.jsonl", [SUGGESTION], mode="a")
    return ws


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
def test_metrics_shows_the_suggestion_beside_the_mix(snap_compare, tmp_path, size):
    app = make_app(suggesting_workspace(tmp_path))

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await pilot.press("f4")
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.anyio  # anyio's pytest plugin runs the async test on asyncio
async def test_a_accepts_the_suggestion_as_a_mix_request(tmp_path):
    ws = suggesting_workspace(tmp_path)
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f4")
        await settle(pilot, app)
        line = app.query_one("#suggestion")
        assert line.display and line.text == "suggested at step 100 (a accepts): chess 0.10\u21920.20, science 0.20\u21920.15, data 0.20\u21920.15"
        assert app.query_one("#suggestion-why").text.startswith("chess: held-out 4.100 bpb, 22% above the mean")
        await pilot.press("a")
        await wait_for(pilot, lambda: requests_of(ws, RUN_LIVE) == [1, 2], what="request 2")
        sent = tomllib.loads(request_path(RunDir(ws.runs_dir / RUN_LIVE).requests_dir, 2).read_text())
        assert sent == {"mix": SUGGESTED}
        await wait_for(pilot, lambda: any("request 2" in n for n in notifications(app)), what="the notice")
        ack = [{"type": "mix", "time": T0 + 121, "step": 121, "mix": SUGGESTED, "request_id": 2},
               {"type": "answer", "time": T0 + 121, "step": 121, "request_id": 2, "outcome": "applied"}]
        write_events(ws.runs_dir / RUN_LIVE / "events.jsonl", ack, mode="a")
        await wait_for(pilot, lambda: "(in force)" in app.query_one("#suggestion").text, what="in force")
