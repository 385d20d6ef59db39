"""Epochs in the workbench: an entry's detail (Enter in the Queue pane) says how many passes its
stage makes over each domain: planned while it waits, measured from the step events once it trains."""

from __future__ import annotations

import json

from engine.jobs.queue import StageQueue
from fcwork.panes.queue import entry_detail


def test_a_queued_entry_shows_the_passes_its_stage_plans(tiny_ws):
    entry = StageQueue(tiny_ws).add("tiny", "first")
    text = entry_detail(tiny_ws, entry).plain
    assert "passes over each domain (planned)" in text
    assert "code " in text and "science " in text and "x" in text.split("(planned)")[1]


def test_a_running_entry_shows_the_passes_made_so_far(tiny_ws):
    from engine.jobs.rundir import RunDir
    from engine.jobs.runs import create_run

    q = StageQueue(tiny_ws)
    entry = q.add("tiny", "first")
    run = RunDir(create_run(tiny_ws, tiny_ws.load_profile("tiny"), "first"))
    q.update(entry.id, run_id=run.id, state="running")
    with open(run.events_file, "w") as fh:
        fh.write(json.dumps({"type": "step", "time": 1.0, "step": 3, "loss": 5.0,
                             "epochs": {"code": 0.125, "science": 0.25}}) + "\n")
    text = entry_detail(tiny_ws, q.get(entry.id)).plain
    assert "passes over each domain so far" in text and "code 0.12x, science 0.25x" in text
