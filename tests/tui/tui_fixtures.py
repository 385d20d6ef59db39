"""Real workspaces for the TUI tests: profiles, queue.toml, run folders with stage.toml and
events.jsonl written as the trainer and the supervisor write them (fixed numbers, no clock)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import tomli_w

from engine.jobs.queue import QueueEntry, dumps_queue
from engine.jobs.control import request_ids, request_path
from engine.jobs.rundir import RunDir
from engine.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("science", "code", "chess", "data", "chat")
MIX = {"science": 0.3, "code": 0.3, "chess": 0.1, "data": 0.2, "chat": 0.1}
RUN_DONE = "20250101-100000-base"
RUN_LIVE = "20250102-120000-base"
T0 = 1_735_812_000.0  # fixed event times


# The profile the TUI tests use, pinned here so that edits to the shipped default profile do not
# change what the snapshots show.
PROFILE = """
[profile]
name = "default"
seed = 1234

[mix]
science = 0.3
code = 0.3
chess = 0.1
data = 0.2
chat = 0.1

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
lr = 3e-3
warmup_steps = 30

[[stages]]
name = "anneal"
model = "tiny"
init_from = "base"
seq_len = 256
micro_batch = 16
grad_accum = 2
max_steps = 100
lr = 1e-3
warmup_steps = 10
schedule = "wsd"
"""


def stage_toml(run_id: str, stage: str = "base", max_steps: int = 300) -> str:
    return tomli_w.dumps({
        "run": {"id": run_id, "profile": "default", "stage": stage, "created": run_id[:15], "workspace": "ws"},
        "paths": {"tokenizer": "", "tokenizer_hash": "", "shards": "", "init_from": ""},
        "stage": {"name": stage, "seq_len": 256, "micro_batch": 16, "grad_accum": 2, "max_steps": max_steps,
                  "model": {"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 384,
                            "vocab_size": 8000, "max_seq_len": 256}},
        "mix": dict(MIX),
    })


def step_event(step: int, mix: dict | None = None, t: float | None = None) -> dict:
    base = 3.0 + 6.0 * math.exp(-step / 40)
    return {
        "type": "step", "time": t if t is not None else T0 + step, "step": step, "tokens": step * 8192,
        "loss": round(base, 5),
        "domain_loss": {d: round(base + 0.3 * i - 0.5, 5) for i, d in enumerate(DOMAINS)},
        "lr": round(3e-3 * min(1.0, step / 30), 8), "grad_norm": round(1.0 + 2.0 * math.exp(-step / 20), 5),
        "tokens_per_s": 8192.0, "step_time": 1.0, "mem_bytes": 500_000_000 + step * 1000,
        "mix": dict(mix or MIX),
    }


def eval_event(step: int) -> dict:
    base = 3.2 + 6.0 * math.exp(-step / 40)
    return {"type": "eval", "time": T0 + step + 0.5, "step": step, "loss": round(base, 5),
            "domain_loss": {d: round(base + 0.25 * i - 0.4, 5) for i, d in enumerate(DOMAINS)}}


def run_events(steps: int, max_steps: int = 300, finished: bool = False, mix_at: int | None = 60) -> list[dict]:
    """A run's events up to `steps`: status, steps, evals every 50, one acknowledged mix change."""
    evs: list[dict] = [{"type": "status", "time": T0, "state": "starting", "step": 0, "max_steps": max_steps,
                        "pid": 4242, "device": "cpu"},
                       {"type": "status", "time": T0, "state": "running", "step": 0, "max_steps": max_steps,
                        "pid": 4242, "device": "cpu"}]
    mix = dict(MIX)
    for s in range(1, steps + 1):
        if mix_at is not None and s == mix_at:
            mix = {"science": 0.2, "code": 0.4, "chess": 0.1, "data": 0.2, "chat": 0.1}
            evs.append({"type": "mix", "time": T0 + s, "step": s, "mix": dict(mix), "request_id": 1})
            evs.append({"type": "answer", "time": T0 + s, "step": s, "request_id": 1, "outcome": "applied"})
        evs.append(step_event(s, mix))
        if s % 50 == 0:
            evs.append(eval_event(s))
        if s % 100 == 0:
            evs.append({"type": "checkpoint", "time": T0 + s, "step": s, "path": f"ckpt/step-{s}"})
    if finished:
        evs.append({"type": "status", "time": T0 + steps, "state": "finished", "step": steps,
                    "max_steps": max_steps, "pid": 4242, "device": "cpu"})
    return evs


def write_events(path: Path, events: list[dict], mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev) + "\n")


def make_run(ws: Workspace, run_id: str, events: list[dict], stage: str = "base", max_steps: int = 300) -> Path:
    run_dir = ws.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "stage.toml").write_text(stage_toml(run_id, stage, max_steps), encoding="utf-8")
    write_events(run_dir / "events.jsonl", events)
    return run_dir


def requests_of(ws: Workspace, run_id: str) -> list[int]:
    """The ids of the control requests in a run's folder."""
    return request_ids(RunDir(ws.runs_dir / run_id).requests_dir)


def write_queue(ws: Workspace, entries: list[QueueEntry]) -> None:
    ws.queue_path.write_text(dumps_queue(entries), encoding="utf-8")


def make_workspace(root: Path, live_steps: int = 120) -> Workspace:
    """A workspace with a finished run, a running one (no trainer behind it) and a queued stage."""
    ws = Workspace(root)
    ws.init()
    ws.profile_path("default").write_text(PROFILE, encoding="utf-8")
    make_run(ws, RUN_DONE, run_events(300, finished=True, mix_at=None))
    live = make_run(ws, RUN_LIVE, run_events(live_steps))
    # The request the history's `mix` and `answer` events acknowledge, as `fcwork mix` left it.
    request = request_path(RunDir(live).requests_dir, 1)
    request.parent.mkdir()
    request.write_text(tomli_w.dumps({"mix": {"science": 0.2, "code": 0.4, "chess": 0.1, "data": 0.2, "chat": 0.1}}),
                       encoding="utf-8")
    write_queue(ws, [
        QueueEntry(id=1, profile="default", stage="base", state="done", run_id=RUN_DONE, message="finished",
                   added=T0 - 7200),
        QueueEntry(id=2, profile="default", stage="base", state="running", run_id=RUN_LIVE, message="running",
                   added=T0 - 60),
        QueueEntry(id=3, profile="default", stage="anneal", state="queued", added=T0),
    ])
    return ws


def empty_workspace(root: Path) -> Workspace:
    ws = Workspace(root)
    ws.init()
    return ws


async def settle(pilot, app, timeout: float = 5.0) -> None:
    """Wait until the watcher has read every file to its end and the panes' workers are done."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    start_idle = app.watcher.idle_passes
    while time.monotonic() < deadline:
        if app.watcher.idle_passes >= start_idle + 2 and app.profile is not None:
            break
        app.watcher.poke()  # a pass now, not at the next safety poll (notifications wake it otherwise)
        await pilot.pause(0.02)
    for _ in range(3):
        others = [w for w in app.workers if w.group != "watch"]
        if others:  # an empty list would mean "all", the endless watcher included
            await app.workers.wait_for_complete(others)
        await pilot.pause()
        await asyncio.sleep(0)
    for pane in app.panes.values():
        if pane.active:
            pane.redraw()
    await pilot.pause()


def make_app(ws: Workspace, profile: str = "default", restart_supervisor: bool = False):
    """The real app on a test workspace: fast polling, no cursor blink."""
    from fcwork.app import FcworkApp

    return FcworkApp(ws.root, profile=profile, poll_s=0.05, cursor_blink=False, restart_supervisor=restart_supervisor)


async def show_pane(pilot, app, key: str) -> None:
    """Settle, press a pane's key (f1-f5), and settle again: the pane is built and caught up."""
    await settle(pilot, app)
    await pilot.press(key)
    await settle(pilot, app)


async def wait_for(pilot, cond, timeout: float = 10.0, what: str = "condition") -> None:
    """Pump the app until `cond()` holds (instead of sleeping a fixed time)."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def notifications(app) -> list[str]:
    return [n.message for n in app._notifications]


async def key_latency(app, key: str, done, timeout: float = 5.0) -> float:
    """Seconds from a key event reaching the app's driver until `done()` holds (what a user waits
    for); Pilot.press also waits for screens and animations to settle, so it would overstate this."""
    import asyncio
    import time

    from textual import events

    event = events.Key(key, None)
    event.set_sender(app)
    t0 = time.perf_counter()
    app._driver.send_message(event)
    while not done():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"key {key} not handled within {timeout} s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - t0


def write_harness_evals(ws: Workspace) -> None:
    """evals.jsonl records for the snapshot of the Eval pane: a checkpoint eval of the finished run
    and an in-training one of the live run, every probe scored, one sample each."""
    from engine.eval.harness import DomainScore, EvalLimits, EvalReport, append_eval, record
    from engine.eval.probes import ProbeResult

    ln2 = 0.6931471805599453
    for run, step, ckpt, sha, scale in ((RUN_DONE, 300, "ckpt/step-300", "ab" * 32, 1.0), (RUN_LIVE, 120, "", "", 1.2)):
        domains = {d: DomainScore(4, 1000, 3000, 3000 * ln2 * bpb * scale)
                   for d, bpb in (("science", 1.9), ("code", 1.4), ("chess", 1.1), ("data", 1.2), ("chat", 1.6))}
        probes = {"chess": ProbeResult("chess", 1, {"legal": 0.75 / scale, "match": 0.25 / scale}, 16),
                  "code": ProbeResult("code", 1, {"compile": 0.5 / scale}, 8),
                  "data": ProbeResult("data", 1, {"exact": 0.125 / scale}, 8),
                  "science": ProbeResult("science", 2, {"accuracy": 0.5625 / scale, "chance": 0.25}, 16)}
        samples = {"code": [{"prompt": "def add(a, b):", "completion": "\n    return a + b\n", "reason": "eos"}],
                   "chess": [{"prompt": "1. e4 e5 2.", "completion": " Nf3 Nc6 3. Bb5", "reason": "length"}]}
        report = EvalReport(domains, probes, samples, seconds=3.5)
        append_eval(ws.runs_dir / run, record(report, run, step, ckpt, sha, EvalLimits(), "cpu"))
