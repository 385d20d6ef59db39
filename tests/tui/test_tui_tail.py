"""The events follower and run history behind the TUI (no Textual). The app's import cost is
checked in tests/test_layers.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.jobs.events import EventTail
from engine.jobs.history import RunHistory, RunStore, Series
from tui_fixtures import REPO_ROOT, T0, run_events, step_event, write_events


def test_history_keeps_whole_span_in_bounded_memory():
    store = RunStore()
    data = "".join(json.dumps(step_event(i)) + "\n" for i in range(1, 20_001)).encode()
    lines = data.split(b"\n")
    for i in range(0, len(lines), 700):  # fed in slices, as the watcher does
        store.ingest_lines("r", b"\n".join(lines[i:i + 700]))
    h = store.runs["r"]
    xs, ys = h.series["loss"].points()
    assert len(xs) <= 2049 and h.step_stride > 1
    assert xs[0] == 1 and xs[-1] == 20_000  # first and latest steps both there
    assert xs == sorted(xs) and h.steps_seen == 20_000 and h.step == 20_000
    assert h.series["loss/chat"].last == step_event(20_000)["domain_loss"]["chat"]
    assert len(h.series["loss/code"]) == len(h.series["loss"])  # one shared step axis


def test_lazy_and_full_parsing_agree():
    evs = run_events(500)
    lines = "".join(json.dumps(e) + "\n" for e in evs).encode()
    a, b = RunStore(), RunStore()
    a.ingest("r", evs)
    b.ingest_lines("r", lines)
    ha, hb = a.runs["r"], b.runs["r"]
    assert ha.series["loss"].points() == hb.series["loss"].points()
    assert (ha.step, ha.state, list(ha.mixes), dict(ha.acks)) == (hb.step, hb.state, list(hb.mixes), dict(hb.acks))
    assert len(hb.evals) == 10


def test_series_replayed_steps_replace_newer_points():
    s = Series()
    for step in range(1, 21):
        s.append(step, 1.0)
    for step in range(11, 16):  # a resumed run re-emits steps after its checkpoint
        s.append(step, 2.0)
    xs, ys = s.points()
    assert xs == list(range(1, 16))
    assert ys[-5:] == [2.0] * 5


def test_tail_reads_whole_lines_in_bounded_chunks(tmp_path):
    path = tmp_path / "events.jsonl"
    evs = run_events(200)
    write_events(path, evs)
    with open(path, "a") as fh:
        fh.write('{"type": "step", "step": 201, "lo')  # a line still being written
    tail = EventTail(path, chunk_bytes=4096)
    got, calls = [], 0
    while True:
        events, bad, reset = tail.read_events()
        calls += 1
        got += events
        if tail.offset >= path.stat().st_size - 40 and not events:
            break
    assert calls > 5  # the backlog came in slices
    assert got == evs and bad == 0 and not reset
    with open(path, "a") as fh:
        fh.write('ss": 3.0}\nnot json\n')
    events, bad, _ = tail.read_events()
    assert [e["step"] for e in events] == [201] and bad == 1


def test_tail_restarts_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "events.jsonl"
    write_events(path, run_events(30))
    tail = EventTail(path)
    tail.read_events()
    tmp = tmp_path / "new.jsonl"
    write_events(tmp, run_events(3))
    os.replace(tmp, path)
    events, _, reset = tail.read_events()
    assert reset and events[0]["type"] == "status" and events[-1]["step"] == 3


def test_history_folds_events_and_acks():
    store = RunStore()
    notable = store.ingest("r1", run_events(120, max_steps=300))
    h = store.runs["r1"]
    assert h.state == "running" and h.step == 120 and h.max_steps == 300 and h.device == "cpu"
    assert {rid: ev["step"] for rid, ev in h.acks.items()} == {1: 60}
    assert [m[0] for m in h.mixes] == [1, 60] and h.mixes[1][1]["code"] == 0.4
    assert len(h.evals) == 2 and h.series["eval/code"].last is not None
    assert {e["type"] for e in notable} == {"status", "mix", "answer", "eval", "checkpoint"}
    h.tokens_per_step = 8192
    assert h.eta_seconds() == (300 - 120) * 8192 / 8192.0
    assert store.running() == ["r1"]


def test_history_ignores_malformed_fields():
    h = RunHistory("r")
    h.ingest({"type": "step", "step": "x", "loss": 1.0})
    h.ingest({"type": "step", "step": 3, "loss": float("nan"), "domain_loss": {"a": "bad"}, "mix": [1]})
    h.ingest({"type": "mix", "step": 4, "mix": {"a": 1.0}, "request_id": True})
    h.ingest({"type": "whatever"})
    assert h.step == 3 and "loss" not in h.series and h.acks == {}


def test_step_event_fixture_is_what_the_trainer_writes():
    ev = step_event(5)
    assert json.loads(json.dumps(ev)) == ev
    assert set(ev) >= {"type", "time", "step", "tokens", "loss", "domain_loss", "lr", "grad_norm", "tokens_per_s",
                       "step_time", "mem_bytes", "mix"}
    assert Path(REPO_ROOT, "fcwork", "app.tcss").exists()


def test_eta_follows_the_wall_clock_step_rate_not_the_noisy_tokens_per_s():
    """Steps every 2 s while tokens/s jumps around (and an eval pause is in the time): the ETA is the
    remaining steps at the measured rate; a new trainer process (status starting) starts it again."""
    h = RunHistory("r")
    h.ingest({"type": "status", "state": "running", "step": 0, "max_steps": 100, "time": T0})
    for step in range(1, 41):
        ev = step_event(step, t=T0 + 2.0 * step)
        ev["tokens_per_s"] = 8192.0 * (3.0 if step % 2 else 0.5)  # what a busy machine reports
        h.ingest(ev)
    assert h.eta_seconds() == (100 - 40) * 2.0
    h.ingest({"type": "status", "state": "starting", "step": 40, "max_steps": 100, "time": T0 + 5000})
    h.ingest(step_event(41, t=T0 + 5010))
    assert len(h.recent) == 1  # the hour with no trainer is not part of the rate
    h.ingest(step_event(42, t=T0 + 5011))
    assert h.eta_seconds() == (100 - 42) * 1.0
