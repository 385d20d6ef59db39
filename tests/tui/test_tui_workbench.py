"""The workbench as its owner lives in it (issue 11): the live mix beside the profile's, a saved mix
that keeps the profile's text, an entry's detail, a supervisor pid that is never stale, an eval's
progress and pinned result, a tokenizer built elsewhere, and nothing clipped at 80x24 or 60x20."""

from __future__ import annotations

import json
import os
import sys

import pytest
from textual.widgets import DataTable, Input

from engine.jobs.locks import open_lock, try_flock, write_pid
from engine.jobs.rundir import RunDir
from fcwork.widgets.generate_screen import GenerateScreen
from fcwork.widgets.modals import ConfirmScreen, TextScreen
from tui_fixtures import (LONG_ERROR, RUN_BIG, RUN_DONE, RUN_FAILED, RUN_LIVE, make_app, make_long_workspace,
                          make_workspace, notifications, screen_lines, settle, show_pane, shown, wait_for)

pytestmark = pytest.mark.anyio

PROFILE_WITH_NOTES = '''# The campaign's notes: kept by ctrl+o.
[profile]
name = "default"
seed = 1234

[mix]                      # weights per domain
science = 0.3   # papers
code = 0.3
chess = 0.1
data = 0.2
chat = 0.1

[data]
target_tokens = 1_500_000  # ~1.5M tokens

[tokenizer]
vocab_size = 8000

[[sources]]
name = "python-stdlib"
domain = "code"
format = "builtin:python-stdlib"

[[sources]]
name = "scientific-docs"
domain = "science"
format = "builtin:science-docs"

[[sources]]
name = "chess-games"
domain = "chess"
format = "builtin:chess-games"

[[sources]]
name = "analysis-notebooks"
domain = "data"
format = "builtin:data-notebooks"

[[sources]]
name = "synthetic-chat"
domain = "chat"
format = "builtin:chat"

[[stages]]
name = "base"
model = "tiny"
seq_len = 256
micro_batch = 16
grad_accum = 2
max_steps = 300
'''


# -- the mix ----------------------------------------------------------------------------------------

async def test_after_reattach_the_manifest_shows_the_live_mix_and_its_run(tmp_path):
    ws = make_workspace(tmp_path / "ws")  # the live run's mix changed at step 60: code 0.4, science 0.2
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert shown(app, f"live: run {RUN_LIVE}") and shown(app, "at step 120")
        live = [str(app.query_one(f"#live-{i}").render()).strip() for i in range(5)]
        assert live == ["20.0%", "40.0%", "10.0%", "20.0%", "10.0%"]  # the run's, not the profile's 0.3/0.3
        assert app.query_one("#mix-1", Input).value == "0.3"  # the profile's weights stay editable beside it


async def test_ctrl_o_saves_only_the_mix_values_and_is_not_a_change_on_disk(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    path = ws.profile_path("default")
    path.write_text(PROFILE_WITH_NOTES)
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.query_one("#mix-2", Input).value = "0.5"  # chess
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: "chess = 0.5" in path.read_text(), what="the saved mix")
        assert path.read_text() == PROFILE_WITH_NOTES.replace("chess = 0.1", "chess = 0.5")
        await wait_for(pilot, lambda: app.profile.mix["chess"] == 0.5, what="the profile read back")
        await settle(pilot, app)
        status = str(app.query_one("#mix-status").render())
        assert "saved to profiles/default.toml" in status and "changed on disk" not in status
        assert not any("reloaded from disk" in m for m in notifications(app))
        # An edit made outside the app still is a change on disk, and says so.
        path.write_text(path.read_text().replace("chess = 0.5", "chess = 0.25"))
        await wait_for(pilot, lambda: "changed on disk" in str(app.query_one("#mix-status").render()),
                       what="outside edit noticed")
        assert any("reloaded from disk" in m for m in notifications(app))


# -- the queue --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_enter_opens_an_entry_with_its_whole_message_log_mix_history_and_exports(tmp_path, size):
    ws = make_long_workspace(tmp_path)
    app = make_app(ws)
    async with app.run_test(size=size) as pilot:
        await show_pane(pilot, app, "f3")
        table = app.query_one("#queue-table", DataTable)
        table.move_cursor(row=3)  # the failed entry
        await pilot.pause()
        assert shown(app, LONG_ERROR)  # under the table, whole, without opening anything
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), what="the detail")
        body = str(app.screen.body)
        assert LONG_ERROR in body and RUN_FAILED in body and "trainer.log" in body
        assert shown(app, "Entry 4: default / anneal, failed")
        await pilot.press("escape")
        table.move_cursor(row=2)  # the running one: mix history, exports
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), what="the detail")
        body = str(app.screen.body)
        assert RUN_BIG in body and "from step 400000 (request 1): science=0.100 code=0.500" in body
        assert "gguf-q8-step1200000  4.1 kB" in body and "INFO step 1234029" in body


async def test_the_title_shows_the_supervisor_only_while_it_runs(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    title = lambda: str(app.query_one("#queue-title").render())  # noqa: E731
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f3")
        await wait_for(pilot, lambda: "no supervisor" in title(), what="no supervisor")
        fd = open_lock(ws.root / "supervisor.lock")  # a supervisor: whoever holds the lock
        assert try_flock(fd)
        write_pid(fd, os.getpid())
        try:
            await wait_for(pilot, lambda: f"supervisor pid {os.getpid()}" in title(), what="its pid")
        finally:
            os.close(fd)  # it ends: the pid must go from the screen
        await wait_for(pilot, lambda: "no supervisor" in title() and str(os.getpid()) not in title(),
                       what="the pid gone")


# -- eval -------------------------------------------------------------------------------------------

FAKE_EVAL = r"""
import json, sys, time
from engine.eval.harness import DomainScore, EvalLimits, EvalReport, append_eval, record
run_dir = sys.argv[1]
for i, label in enumerate(["bits per byte of 5 domains", "chess probe", "code probe"]):
    print(json.dumps({"label": label, "done": i, "total": 4}), flush=True)
    time.sleep(0.4)
report = EvalReport({"code": DomainScore(2, 100, 400, 400 * 0.6931471805599453 * 0.987)}, {}, {})
append_eval(run_dir, record(report, "RUN", 300, "ckpt/step-300", "cd" * 32, EvalLimits(), "cpu"))
print(json.dumps({"result": {"run": "RUN", "step": 300, "bpb": 0.987, "device": "cpu"}}), flush=True)
"""


async def test_a_long_eval_shows_progress_and_its_result_stays_pinned(tmp_path, monkeypatch):
    import subprocess

    from fcwork import jobs

    ws = make_workspace(tmp_path / "ws")
    run = RunDir(ws.runs_dir / RUN_DONE)
    (run.checkpoint_path(300)).mkdir(parents=True)
    (run.checkpoint_path(300) / "state.json").write_text("{}")
    started = []

    def fake_spawn(job, workspace, target):
        started.append((job, target))
        proc = subprocess.Popen([sys.executable, "-c", FAKE_EVAL.replace("RUN", target), str(run.path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(jobs.__file__).rsplit("/fcwork/", 1)[0]})
        return proc

    monkeypatch.setattr(jobs, "spawn", fake_spawn)
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f5")
        pane = app.panes["eval"]
        pane.run_ids, pane.chosen = [RUN_DONE], True
        await pilot.press("e")
        job = app.query_one("#eval-job")
        await wait_for(pilot, lambda: "chess probe (1/4)" in str(job.render()), what="progress")
        assert app.query_one("#eval-progress").display and pane.evaluating == RUN_DONE
        await wait_for(pilot, lambda: pane.evaluating is None, timeout=30, what="the eval to end")
        assert started == [("eval", RUN_DONE)]
        assert "evaluated 20250101-100000-base at step 300" in str(job.render()) and "0.987" in str(job.render())
        assert not app.query_one("#eval-progress").display
        # The trainer writes an in-training eval afterwards: the checkpoint eval stays, first.
        with open(run.evals_file, "a") as fh:
            fh.write(json.dumps({"run": RUN_DONE, "step": 310, "checkpoint": "", "checkpoint_sha256": "",
                                 "metrics": {"bpb": 1.5}}) + "\n")
        table = app.query_one("#harness", DataTable)
        await wait_for(pilot, lambda: len(table.columns) == 3, what="both records")
        assert [str(c) for c in table.get_row("step")] == ["step", "300", "310"]
        assert [str(c) for c in table.get_row("bpb")] == ["bpb all", "0.987", "1.500"]
        assert "evaluated 20250101-100000-base" in str(job.render())


# -- tokenizer --------------------------------------------------------------------------------------

async def test_the_tokenizer_pane_shows_a_tokenizer_built_elsewhere(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f2")
        info = app.query_one("#tok-info")
        assert "not trained yet" in str(info.render())
        model = ws.tokenizer_path(app.profile.tokenizer_name)
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(b"model")  # what `fcwork data prepare` or `tokenizer train` leaves
        report = {"name": model.stem, "hash": "0123456789abcdef0123", "vocab_size": 8000, "model_type": "bpe",
                  "sample_chars": {"code": 1000}, "tokens_per_char": {"code": 0.25}, "train_seconds": 1.5}
        model.with_suffix(".json").write_text(json.dumps(report))
        await wait_for(pilot, lambda: "hash 0123456789abcdef" in str(info.render()), what="the new tokenizer")
        report["hash"] = "fedcba98765432100000"  # retrained
        model.with_suffix(".json").write_text(json.dumps(report))
        await wait_for(pilot, lambda: "hash fedcba9876543210" in str(info.render()), what="the retrained one")


# -- nothing clipped ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_metrics_keep_every_value_and_the_legend(tmp_path, size):
    ws = make_long_workspace(tmp_path)
    app = make_app(ws)
    async with app.run_test(size=size) as pilot:
        await show_pane(pilot, app, "f4")
        assert app.panes["metrics"].run_id == RUN_BIG
        for text in ("step 1234567/1500000", "ETA ", "1.2", "0.003", "0.892", "12.3GB", "41.2%"):
            assert shown(app, text), (text, screen_lines(app))
        assert shown(app, "tok/s") or shown(app, "tokens/s")
        assert shown(app, "grad")
        assert shown(app, "0.883\u20131.04")  # the grad norm sparkline's scale
        await pilot.press("l")  # per domain: five legend entries, none cut
        await settle(pilot, app)
        for d in ("science", "code", "chess", "data", "chat"):
            assert any(f"\u2501 {d} " in line for line in screen_lines(app)), (d, screen_lines(app))
        footer = screen_lines(app)[-1]
        assert footer.rstrip().endswith("q Quit"), footer


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_the_cancel_question_is_whole(tmp_path, size):
    ws = make_long_workspace(tmp_path)
    app = make_app(ws)
    async with app.run_test(size=size) as pilot:
        await show_pane(pilot, app, "f3")
        app.query_one("#queue-table", DataTable).move_cursor(row=2)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.pause()
        assert shown(app, app.screen.question) and shown(app, "y/enter: yes   n/escape: no")


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_the_generate_status_line_is_on_screen(tmp_path, size):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=size) as pilot:
        await show_pane(pilot, app, "f5")
        await app.push_screen(GenerateScreen(ws.root, RUN_LIVE))
        await pilot.pause()
        status = app.screen.query_one("#gen-status")
        status.update("fcwork: error: 20250102-120000-base has no checkpoint yet")
        await pilot.pause()
        region = status.region
        assert region.height >= 1 and region.bottom <= size[1] - 1  # above the footer
        assert shown(app, "has no checkpoint yet")
