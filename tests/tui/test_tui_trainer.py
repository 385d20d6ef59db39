"""The app against the real trainer: a live run's metrics appear, and a mix typed in the Manifest
pane goes through a control request (runs/<id>/requests/) to `python -m engine.train`, whose `answer` the pane shows."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tests.train_fixtures import build_train_workspace, kill, log_tail, make_run, start_trainer
from tui_fixtures import make_app, settle, wait_for

pytestmark = pytest.mark.anyio


async def test_live_run_and_mix_ack_from_the_real_trainer(tmp_path):
    tw = build_train_workspace(tmp_path / "ws")
    run_dir = make_run(tw, "short", max_steps=100_000, checkpoint_every=50_000, eval_every=25)
    proc = start_trainer(run_dir)
    try:
        app = make_app(tw.ws, profile="trainfx")
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            store = app.store
            await wait_for(pilot, lambda: run_dir.name in store.runs and store.runs[run_dir.name].step >= 3,
                           timeout=90, what=f"trainer steps; trainer.log:\n{log_tail(run_dir)}")
            assert app.running_run() == run_dir.name
            domains = list(app.profile.mix)
            assert domains == ["code", "science", "chess"]
            for i, w in enumerate(("1", "0", "0")):
                app.query_one(f"#mix-{i}", Input).value = w
            app.query_one("#mix-0", Input).focus()
            await pilot.press("enter")
            status = app.query_one("#mix-status")
            await wait_for(pilot, lambda: "applied at step" in str(status.render()), timeout=60,
                           what=f"the trainer's ack; trainer.log:\n{log_tail(run_dir)}")
            step = int(str(status.render()).split("applied at step ")[1].split()[0])
            await wait_for(pilot, lambda: store.runs[run_dir.name].step > step + 2, what="steps after the ack")
            with store.lock:
                h = store.runs[run_dir.name]
                after = {k.split("/", 1)[1] for k in h.series if k.startswith("loss/")}
                last = h.last
                mixes = list(h.mixes)
            assert mixes[-1][0] == step and mixes[-1][1]["code"] == 1.0
            assert set(last["domain_loss"]) == {"code"}  # only code is sampled after the change
            assert after >= {"code", "science", "chess"}
            await pilot.press("f4")
            await settle(pilot, app)
            assert app.panes["metrics"].run_id == run_dir.name
    finally:
        kill(proc)
