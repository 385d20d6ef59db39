"""Pilot tests of the workbench's flows on real workspaces (real files, engine modules, subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from engine.compat import tomllib

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import DataTable, Input, TabbedContent

from engine.jobs.control import request_path
from engine.jobs.rundir import RunDir
from engine.profile import load_profile
from engine.jobs.queue import StageQueue
from fcwork.panes.queue import QueuePane
from fcwork.widgets.modals import ConfirmScreen, PickManyScreen, PickScreen
from tui_fixtures import (REPO_ROOT, stop_supervisor, RUN_DONE, RUN_LIVE, empty_workspace, make_app, make_run, make_workspace,
                          key_latency, notifications, requests_of, run_events, settle, show_pane, step_event, wait_for,
                          write_events)

pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the async tests on asyncio


def active_tab(app) -> str:
    return app.query_one(TabbedContent).active


async def test_startup_keys_switch_panes(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert app.profile is not None and app.profile.name == "default"
        for key, tab in (("f2", "tab-tokenizer"), ("f3", "tab-queue"), ("f4", "tab-metrics"), ("f5", "tab-eval"),
                         ("f1", "tab-manifest")):
            await pilot.press(key)
            assert active_tab(app) == tab
        await pilot.press("3")  # digits too, while no text box has the focus
        assert active_tab(app) == "tab-queue"
        assert app.panes["queue"].active and not app.panes["manifest"].active


async def test_reattach_replays_history_then_follows(tmp_path):
    ws = make_workspace(tmp_path / "ws", live_steps=3000)
    app = make_app(ws)
    start = time.monotonic()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.store.runs.get(RUN_LIVE) is not None
                       and app.store.runs[RUN_LIVE].step == 3000, timeout=5, what="replay")
        replayed = time.monotonic() - start
        await pilot.press("f4")
        await settle(pilot, app)
        metrics = app.panes["metrics"]
        assert metrics.run_id == RUN_LIVE  # the running stage is shown without asking
        await wait_for(pilot, lambda: "step 3000/300" in str(app.query_one("#metrics-title").render()),
                       what="metrics title")
        h = app.store.runs[RUN_LIVE]
        xs, _ = h.series["loss"].points()
        assert xs[0] == 1 and xs[-1] == 3000  # the full history, thinned
        queue = app.panes["queue"]
        assert [e.state for e in queue.entries] == ["done", "running", "queued"]
        write_events(ws.runs_dir / RUN_LIVE / "events.jsonl", [step_event(s) for s in range(3001, 3011)], mode="a")
        await wait_for(pilot, lambda: app.store.runs[RUN_LIVE].step == 3010, what="live events")
        await wait_for(pilot, lambda: "step 3010" in str(app.query_one("#metrics-title").render()),
                       what="live redraw")
    assert replayed < 3.0  # generous for a loaded 2-core box; the bench measures it properly


async def test_app_never_imports_torch_or_sentencepiece_after_mount(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(REPO_ROOT / 'tests' / 'tui')!r})
from tui_fixtures import make_app, settle
from engine.workspace import Workspace
async def main():
    app = make_app(Workspace({str(ws.root)!r}))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for key in ("f2", "f3", "f4", "f5", "f1"):
            await pilot.press(key)
            await settle(pilot, app)
asyncio.run(main())
assert 'torch' not in sys.modules, 'torch imported'
assert 'sentencepiece' not in sys.modules, 'sentencepiece imported'
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


async def test_mix_edit_writes_control_and_shows_the_ack(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        inp = app.query_one("#mix-1", Input)  # code
        inp.focus()
        inp.value = ""
        await pilot.press("0", ".", "6")
        assert app.query_one("#bar-1").value == pytest.approx(0.6 / 1.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: requests_of(ws, RUN_LIVE) == [1, 2], what="request 2")
        data = tomllib.loads(request_path(RunDir(ws.runs_dir / RUN_LIVE).requests_dir, 2).read_text())
        assert data["mix"]["code"] == pytest.approx(0.6 / 1.3)
        assert sum(data["mix"].values()) == pytest.approx(1.0)
        status = app.query_one("#mix-status")
        await wait_for(pilot, lambda: "request 2 sent" in str(status.render()), what="sent status")
        ack = [{"type": "mix", "time": 0.0, "step": 121, "mix": data["mix"], "request_id": 2},
               {"type": "answer", "time": 0.0, "step": 121, "request_id": 2, "outcome": "applied"}]
        write_events(ws.runs_dir / RUN_LIVE / "events.jsonl", ack, mode="a")
        await wait_for(pilot, lambda: "applied at step 121" in str(status.render()), what="ack")


async def test_bad_weight_is_a_one_line_error_and_nothing_is_sent(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for i in range(5):
            app.query_one(f"#mix-{i}", Input).value = "0"
        app.query_one("#mix-0", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert "expected at least one positive weight" in str(app.query_one("#mix-status").render())
        assert any("positive weight" in m for m in notifications(app))
        assert requests_of(ws, RUN_LIVE) == [1]


async def test_save_mix_to_profile_and_pick_up_outside_edits(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    path = ws.profile_path("default")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.query_one("#mix-2", Input).value = "0.5"  # chess
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: load_profile(path).mix["chess"] == 0.5, what="saved mix")
        assert load_profile(path).stages  # the rest of the profile survived
        # An edit made outside the app is picked up and shown.
        text = path.read_text().replace("chess = 0.5", "chess = 0.25")
        path.write_text(text)
        await wait_for(pilot, lambda: app.query_one("#mix-2", Input).value == "0.25", what="reload")
        # A broken profile on disk is reported, and the last good one stays.
        path.write_text(text.replace("[mix]", "[mix\n"))
        await wait_for(pilot, lambda: any("invalid TOML" in m for m in notifications(app)), what="error note")
        assert app.profile.mix["chess"] == 0.25


async def test_sources_table_marks_missing_globs(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    (ws.root / "notes").mkdir()
    (ws.root / "notes" / "a.txt").write_text("hello world " * 100)
    (ws.profiles_dir / "files.toml").write_text(
        '[profile]\nname = "files"\n[mix]\nscience = 1.0\ncode = 0.5\n'
        '[[sources]]\nname = "notes"\ndomain = "science"\nformat = "text"\npath = "../notes/*.txt"\n'
        '[[sources]]\nname = "gone"\ndomain = "code"\nformat = "text"\npath = "../nowhere/*.py"\n')
    app = make_app(ws, profile="files")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        table = app.query_one("#sources", DataTable)
        rows = {str(table.get_row(k)[0]): [str(c) for c in table.get_row(k)] for k in table.rows}
        # columns: source, domain, status, size, tokens, format
        assert rows["notes"][2] == "ok" and rows["notes"][3] == "1.2 kB" and rows["notes"][4].startswith("~")
        assert rows["gone"][2] == "missing" and rows["gone"][3] == "-"
        # Once the corpus is built, its manifest's token estimate is shown instead.
        raw = ws.raw_dir("files")
        raw.mkdir(parents=True)
        (raw / "manifest.json").write_text(json.dumps({"profile": "files", "domains": {
            "science": {"docs": 40, "chars": 36000, "est_tokens": 10000, "sources": {"notes": 40}}}}))
        await wait_for(pilot, lambda: str(table.get_row("notes")[4]) == "10.0k", what="manifest tokens")


async def test_apply_without_a_running_stage_only_checks(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "no stage is running" in str(app.query_one("#mix-status").render())
        assert any("No stage is running" in m for m in notifications(app))
        assert not list(ws.runs_dir.glob("*/requests/*.toml"))


async def test_open_another_profile_from_the_palette(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        commands = {t: cb for t, _, cb in app.palette_commands()}
        commands["Open profile fc450"]()
        await wait_for(pilot, lambda: app.profile.name == "fc450", what="profile switch")
        await settle(pilot, app)
        assert "profile fc450" in str(app.query_one("#title").render())
        assert app.panes["manifest"].domains == list(app.profile.mix)


def test_fcwork_without_subcommand_opens_the_app_on_a_new_workspace(tmp_path):
    import os
    import pty

    root = tmp_path / "fresh"
    master, slave = pty.openpty()
    env = dict(os.environ, FCWORK_TUI_EXIT_AFTER_PAINT="1", TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "fcwork.cli", "--workspace", str(root)], stdin=slave, stdout=slave,
                            stderr=slave, env=env, cwd=REPO_ROOT)
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        code = proc.wait(timeout=60)
        os.close(master)
    assert code == 0, out[-2000:]
    assert (root / "profiles" / "default.toml").exists() and (root / "runs").is_dir()
    bad = tmp_path / "a-file"
    bad.write_text("")
    res = subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(bad)], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and "not a folder" in res.stderr and "Traceback" not in res.stderr


async def test_queue_add_move_remove_with_confirm(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    q = StageQueue(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f3")
        pane: QueuePane = app.panes["queue"]
        await pilot.press("a")
        assert isinstance(app.screen, PickScreen)
        await pilot.press("down", "enter")  # the second stage: anneal
        await pilot.press("enter")  # it starts from the profile's init_from (base), offered first
        await wait_for(pilot, lambda: len(q.read()) == 4, what="added entry")
        assert (q.read()[-1].stage, q.read()[-1].init_from) == ("anneal", "")
        await wait_for(pilot, lambda: len(pane.entries) == 4, what="table refresh")
        table = app.query_one("#queue-table", DataTable)
        table.move_cursor(row=3)
        await pilot.press("K")
        await wait_for(pilot, lambda: [e.id for e in q.read()] == [1, 2, 4, 3], what="move up")
        await wait_for(pilot, lambda: pane.selected_id() == 4, what="cursor follows")
        await pilot.press("J")
        await wait_for(pilot, lambda: [e.id for e in q.read()] == [1, 2, 3, 4], what="move down")
        await wait_for(pilot, lambda: pane.selected_id() == 4, what="cursor follows")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot, app)
        assert len(q.read()) == 4
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: [e.id for e in q.read()] == [1, 2, 3], what="removed")


async def test_queue_cancel_resume_and_errors_become_notifications(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    q = StageQueue(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f3")
        table = app.query_one("#queue-table", DataTable)
        # Removing a running entry is refused by the engine: the app says so, the line under the
        # table keeps saying it (a notification is gone in seconds), and it carries on.
        table.move_cursor(row=1)
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: any("is running; cancel it first" in m for m in notifications(app)),
                       what="error notification")
        status = app.query_one("#queue-status")
        assert "is running; cancel it first" in str(status.render()) and status.has_class("-error")
        assert app.is_running and len(q.read()) == 3
        await pilot.press("v")
        assert app.panes["queue"].device == "cpu"
        await pilot.press("m")  # the running entry's run in the Metrics pane
        assert active_tab(app) == "tab-metrics" and app.panes["metrics"].run_id == RUN_LIVE
        await pilot.press("f3")
        table.move_cursor(row=2)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: q.get(3).state == "cancelled", what="cancel")
        await pilot.press("r")
        await wait_for(pilot, lambda: q.get(3).state == "queued", what="resume")
        # As `s` does, resume starts a supervisor when none runs (stopped at the end of the test),
        # and the title shows the live one.
        await wait_for(pilot, lambda: any("started the supervisor" in m for m in notifications(app)),
                       what="supervisor started by resume")
        await wait_for(pilot, lambda: "supervisor pid" in str(app.query_one("#queue-title").render()),
                       what="supervisor in the title")
    stop_supervisor(ws)


async def test_queue_start_spawns_the_supervisor(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f3", "s")
        await wait_for(pilot, lambda: any(m.startswith("Started the supervisor") for m in notifications(app)),
                       what="supervisor")
    stop_supervisor(ws)


async def test_metrics_choose_run_and_views(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f4")
        metrics = app.panes["metrics"]
        assert metrics.run_id == RUN_LIVE and metrics.follow
        await pilot.press("r")
        assert isinstance(app.screen, PickScreen)
        await pilot.press("down", "enter")
        assert metrics.run_id == RUN_DONE and not metrics.follow
        await settle(pilot, app)
        assert "finished" in str(app.query_one("#metrics-title").render())
        await pilot.press("l")
        assert metrics.view == "domains"
        await settle(pilot, app)
        lines = app.query_one("#loss-plot").lines  # per domain: the raw values faint, their moving average bright
        assert [ln.label for ln in lines if not ln.faint] == ["science", "code", "chess", "data", "chat"]
        assert [ln.label for ln in lines if ln.faint] == ["science", "code", "chess", "data", "chat"]
        await pilot.press("f")
        assert metrics.run_id == RUN_LIVE and metrics.follow


async def test_eval_runs_side_by_side_and_pick(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f5")
        table = app.query_one("#evals", DataTable)
        assert [str(c.label).replace("\n", "-") for c in table.columns.values()] == ["domain", RUN_LIVE, RUN_DONE]
        assert [str(c) for c in table.get_row("step")] == ["step", "100", "300"]
        await pilot.press("r")
        assert isinstance(app.screen, PickManyScreen)
        await pilot.press("space", "enter")  # untick the first (newest) run
        await settle(pilot, app)
        assert [str(c.label).replace("\n", "-") for c in table.columns.values()] == ["domain", RUN_DONE]
        await pilot.press("h")
        await settle(pilot, app)
        assert [str(c.label).replace("\n", "-") for c in table.columns.values()][-1] == "step 300"


async def test_command_palette_runs_pane_actions(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        titles = [t for t, _, _ in app.palette_commands()]
        for pane in app.panes.values():  # every pane binding is also a command
            for b in pane.BINDINGS:
                assert f"{pane.TITLE}: {b.description}" in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"Queue: Add")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette)
                       and app.screen.query_one(CommandList).option_count > 0, timeout=5, what="palette hits")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PickScreen), what="add dialog")
        assert active_tab(app) == "tab-queue"
        await pilot.press("escape")
        assert not isinstance(app.screen, PickScreen)


async def test_queue_add_picks_where_a_stage_starts(tmp_path):
    """A stage with init_from asks a second question: the profile's init_from first, then the other
    stages, then the finished runs; the choice is kept in the entry and shown in its row."""
    from dataclasses import asdict

    import tomli_w

    ws = make_workspace(tmp_path / "ws")
    path = ws.runs_dir / RUN_DONE / "stage.toml"
    doc = tomllib.loads(path.read_text())
    doc["stage"]["model"] = asdict(load_profile(ws.profile_path("default")).stage("anneal").model_config(8000))
    path.write_text(tomli_w.dumps(doc))
    (ws.runs_dir / RUN_DONE / "ckpt" / "step-300").mkdir(parents=True)
    (ws.runs_dir / RUN_DONE / "ckpt" / "step-300" / "state.json").write_text("{}")
    app = make_app(ws)
    q = StageQueue(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f3")
        await pilot.press("a")
        await pilot.press("down", "enter")  # anneal (init_from = "base")
        assert isinstance(app.screen, PickScreen) and app.screen.title_text == "Start default / anneal from"
        assert [v for _, v in app.screen.options] == ["", RUN_DONE]  # base's latest run, or the finished run
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: len(q.read()) == 4, what="added entry")
        assert (q.read()[-1].stage, q.read()[-1].init_from) == ("anneal", RUN_DONE)
        table = app.query_one("#queue-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 4, what="table refresh")
        assert str(table.get_cell("4", "stage")) == f"anneal from {RUN_DONE}"
        await pilot.press("a", "enter")  # base starts from scratch: no second question
        await wait_for(pilot, lambda: len(q.read()) == 5, what="added base")
        assert q.read()[-1].init_from == ""


async def test_trainer_errors_are_notified_live(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert not any("boom" in m for m in notifications(app))
        write_events(ws.runs_dir / RUN_LIVE / "events.jsonl",
                     [{"type": "error", "time": 0.0, "message": "mix.foo: unknown domain boom", "source": "control"}],
                     mode="a")
        await wait_for(pilot, lambda: any("boom" in m for m in notifications(app)), what="error note")
        # A new run folder appears while the app runs.
        make_run(ws, "20250103-090000-anneal", run_events(5), stage="anneal")
        await wait_for(pilot, lambda: "20250103-090000-anneal" in app.store.runs
                       and app.store.runs["20250103-090000-anneal"].stage == "anneal", what="new run")


async def test_stays_responsive_under_10k_events_per_second(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    events = ws.runs_dir / RUN_LIVE / "events.jsonl"
    head, tail = json.dumps(step_event(121)).split('"step": 121')
    writer = f"""
import time
head, tail = {head!r}, {tail!r}
start = time.monotonic()
with open({str(events)!r}, "a") as fh:
    for i in range(0, 200000, 100):  # 10,000 lines a second (until killed), in batches of 100
        fh.write("".join(head + '"step": ' + str(121 + i + j) + tail + "\\n" for j in range(100)))
        fh.flush()
        time.sleep(max(0.0, start + (i + 100) / 10000 - time.monotonic()))
"""
    app = make_app(ws)

    async def presses(n: int = 20) -> list[float]:
        lags = []
        for i in range(n):
            key, tab = (("f3", "tab-queue") if i % 2 == 0 else ("f4", "tab-metrics"))
            lags.append(await key_latency(app, key, lambda: active_tab(app) == tab))
            await pilot.pause(0.1)
        return sorted(lags)

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        quiet = await presses()
        proc = subprocess.Popen([sys.executable, "-c", writer], stdin=subprocess.DEVNULL)
        try:
            await pilot.pause(0.5)
            loud = await presses()
            assert proc.poll() is None, "the writer finished before the key presses: not a live stream"
        finally:
            proc.kill()
            proc.wait()
        print("key latencies (s), no stream:", [round(x, 4) for x in quiet])
        print("key latencies (s), 10k events/s:", [round(x, 4) for x in loud])
        # Every press is handled while the stream runs (key_latency waits 5 s at most), the median within
        # 100 ms and four in five within 0.5 s. The 100 ms target for the slower presses is
        # bench/tui_lag.py's (a figure, not a test: on a 2-core box the stream's writer shares the CPU
        # with the app; the 80th percentile sat at 0.10-0.11 s and single presses reached 1.3 s).
        p80 = int(len(loud) * 0.8) - 1
        assert loud[len(loud) // 2] < 0.1, loud
        assert loud[p80] < 0.5, (loud, quiet)
        await wait_for(pilot, lambda: app.store.runs[RUN_LIVE].step > 5000, what="stream ingested")


def write_tiny_corpus(ws) -> None:
    """A two-domain corpus (and its manifest) big enough for a 400-piece tokenizer."""
    (ws.profiles_dir / "tiny.toml").write_text(
        '[profile]\nname = "tiny"\n[mix]\nprose = 1.0\ncode = 1.0\n'
        '[tokenizer]\nvocab_size = 400\nsample_chars = 60000\nthreads = 1\n')
    raw = ws.raw_dir("tiny")
    raw.mkdir(parents=True)
    words = "the model reads data and learns a mix of science code chess and chat every step".split()
    prose = [" ".join(words[(i * 7 + j) % len(words)] for j in range(60)) + "." for i in range(200)]
    code = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(400)]
    for name, docs in (("prose", prose), ("code", code)):
        (raw / f"{name}.jsonl").write_text("".join(json.dumps({"text": t, "source": name}) + "\n" for t in docs))
    (raw / "manifest.json").write_text(json.dumps({"profile": "tiny", "digest": "d1", "domains": {}}))


async def test_tokenizer_train_then_pieces_live(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    write_tiny_corpus(ws)
    app = make_app(ws, profile="tiny")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f2")
        await settle(pilot, app)  # the pane is built lazily on first show
        pane = app.panes["tokenizer"]
        assert "not trained yet" in str(app.query_one("#tok-info").render())
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: pane.training or pane.report is not None, timeout=10, what="training start")
        await wait_for(pilot, lambda: pane.report is not None, timeout=60, what="training")
        assert not pane.training
        assert ws.tokenizer_path("tiny").exists()
        info = str(app.query_one("#tok-info").render())
        assert f"vocab {pane.report.vocab_size}" in info and pane.report.hash[:16] in info
        table = app.query_one("#tok-domains", DataTable)
        assert sorted(str(table.get_row(k)[0]) for k in table.rows) == ["code", "prose"]
        await pilot.press("t", *"def f")  # t puts the cursor in the text box
        pieces = app.query_one("#tok-pieces")
        await wait_for(pilot, lambda: "tokens, 5 chars" in str(pieces.render()), what="pieces")
        assert "ids: " in str(pieces.render())
        await pilot.press("ctrl+l")
        assert app.query_one("#tok-text", Input).value == ""


async def test_tokenizer_train_failure_is_a_notification(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f2", "ctrl+t")
        await wait_for(pilot, lambda: any("no corpus yet" in m for m in notifications(app)), timeout=60,
                       what="error notification")
        await wait_for(pilot, lambda: not app.panes["tokenizer"].training, what="training state reset")
        await pilot.press("t", *"abc")
        await wait_for(pilot, lambda: any("no tokenizer yet" in m for m in notifications(app)), what="encode error")
        assert app.is_running


async def test_eval_pane_shows_harness_records_and_runs_eval(tmp_path):
    had_torch = "torch" in sys.modules
    from engine.eval.harness import DomainScore, EvalLimits, EvalReport, append_eval, record
    from engine.eval.probes import ProbeResult

    ws = make_workspace(tmp_path / "ws")
    report = EvalReport({"code": DomainScore(2, 100, 400, 400 * 0.6931471805599453 * 1.234)},
                        {"code": ProbeResult("code", 1, {"compile": 0.625}, 8)},
                        {"code": [{"prompt": "def add(a, b):", "completion": " return a + b", "reason": "length"}]})
    append_eval(ws.runs_dir / RUN_DONE, record(report, RUN_DONE, 300, "ckpt/step-300", "ab" * 32, EvalLimits(), "cpu"))
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f5")
        table = app.query_one("#harness", DataTable)
        assert [str(c.label).replace("\n", "-") for c in table.columns.values()] == ["eval harness", RUN_DONE]
        assert [str(c) for c in table.get_row("bpb/code")] == ["bpb code", "1.234"]
        assert [str(c) for c in table.get_row("probe/code/compile")] == ["code: body compiles", "0.625"]
        assert [str(c) for c in table.get_row("weights")][1].startswith("ckpt ")
        assert table.size.height == table.row_count + table.header_height  # every row shows (the box scrolls)
        assert "return a + b" in str(app.query_one("#eval-samples").render())
        await pilot.press("e")  # the first run (the live one) has no checkpoint: said in one line, no child
        await settle(pilot, app)
        said = [n for n in notifications(app) if "no checkpoint yet" in n]
        assert said == [f"{RUN_LIVE} has no checkpoint yet, nothing to evaluate: the trainer saves one every "
                        "checkpoint_every steps (r picks another run)"]
        assert "Error" not in said[0] and app.panes["eval"].evaluating is None
        assert not [w for w in app.workers if w.group == "eval"]
        assert said[0] in str(app.query_one("#eval-job").render())
        await pilot.press("x")  # export: the same line, no picker, no child
        assert not isinstance(app.screen, PickScreen)
        assert any("nothing to export" in n for n in notifications(app))
        await pilot.press("b")  # a benchmark suite: the same
        assert not isinstance(app.screen, PickScreen)
        assert any("nothing to benchmark" in n for n in notifications(app))
        assert not [w for w in app.workers if w.group == "suite"]
        assert had_torch or "torch" not in sys.modules


def write_tiny_sources(ws) -> None:
    """A profile whose sources are a small text file and a small jsonl file (built in seconds)."""
    src = ws.root / "sources"
    src.mkdir()
    words = "the model reads data and learns a mix of science code chess and chat every step".split()
    prose = [" ".join(words[(i * 7 + j) % len(words)] for j in range(60)) + f" {i}." for i in range(200)]
    (src / "notes.txt").write_text("\n\n".join(prose) + "\n", encoding="utf-8")
    code = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(400)]
    (src / "code.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in code), encoding="utf-8")
    (ws.profiles_dir / "tiny.toml").write_text(
        '[profile]\nname = "tiny"\n[mix]\nprose = 1.0\ncode = 1.0\n'
        '[data]\ntarget_tokens = 100000\nheldout_fraction = 0.1\n'
        '[tokenizer]\nvocab_size = 400\nsample_chars = 100000\nthreads = 1\n'
        '[[sources]]\nname = "notes"\ndomain = "prose"\nformat = "text"\npath = "../sources/notes.txt"\n'
        '[[sources]]\nname = "snippets"\ndomain = "code"\nformat = "jsonl"\npath = "../sources/code.jsonl"\n')


async def test_manifest_builds_the_profile_data(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    write_tiny_sources(ws)
    app = make_app(ws, profile="tiny")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        pane = app.panes["manifest"]
        table = app.query_one("#sources", DataTable)
        assert all(str(table.get_row(k)[4]).startswith("~") for k in table.rows)  # estimates before the build
        assert any("Build data" in title for title, _, _ in app.palette_commands())
        await pilot.press("ctrl+b")
        assert pane.preparing
        await wait_for(pilot, lambda: not pane.preparing, timeout=120, what="data preparation")
        assert "ready (corpus, tokenizer, shards)" in pane.data_status, pane.data_status
        assert "ready (corpus, tokenizer, shards)" in str(app.query_one("#data-status").render())
        assert (ws.raw_dir("tiny") / "manifest.json").exists()
        assert ws.tokenizer_path("tiny").exists()
        assert list(ws.tok_dir("tiny").rglob("*.bin")) or list(ws.tok_dir("tiny").rglob("*.npy")), \
            sorted(p.name for p in ws.tok_dir("tiny").rglob("*"))
        await wait_for(pilot, lambda: all(not str(table.get_row(k)[4]).startswith("~") for k in table.rows),
                       what="built token counts in the sources table")
        assert any("Data of tiny ready" in m for m in notifications(app))
        await pilot.press("ctrl+b")  # everything current now: nothing runs again
        await wait_for(pilot, lambda: not pane.preparing and "nothing was out of date" in pane.data_status,
                       timeout=60, what="second preparation")


async def test_manifest_build_data_failure_is_a_notification(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    (ws.profiles_dir / "broken.toml").write_text(
        '[profile]\nname = "broken"\n[mix]\nprose = 1.0\n'
        '[[sources]]\nname = "gone"\ndomain = "prose"\nformat = "text"\npath = "../nowhere/*.txt"\n')
    app = make_app(ws, profile="broken")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        pane = app.panes["manifest"]
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications), timeout=60,
                       what="error notification")
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert "\n" not in errors[-1], errors
        await wait_for(pilot, lambda: not pane.preparing, what="preparing state reset")
        assert "failed" in pane.data_status and errors[-1] in pane.data_status, (errors, pane.data_status)
        assert app.is_running


async def test_eval_pane_lists_a_run_evaluated_only_by_the_harness(tmp_path):
    """A run whose trainer never evaluated (eval_every = 0) but which `fcwork eval` scored is shown."""
    from textual.widgets import DataTable

    from tui_fixtures import write_harness_evals

    ws = make_workspace(tmp_path / "ws")
    quiet = "20250103-090000-base"
    make_run(ws, quiet, run_events(40, mix_at=None)[:30])  # status and steps only, no eval event
    write_harness_evals(ws)
    (ws.runs_dir / RUN_DONE / "evals.jsonl").rename(ws.runs_dir / quiet / "evals.jsonl")
    app = make_app(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await show_pane(pilot, app, "f5")
        table = app.query_one("#harness", DataTable)
        assert quiet in [str(c.label).replace("\n", "-") for c in table.columns.values()]


async def test_home_and_end_go_to_the_first_and_last_row(tmp_path):
    from textual.widgets import DataTable

    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await show_pane(pilot, app, "f3")
        table = app.query_one("#queue-table", DataTable)
        table.focus()
        await pilot.press("end")
        assert table.cursor_row == table.row_count - 1 > 0
        await pilot.press("home")
        assert table.cursor_row == 0
