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

    from textual.worker import WorkerCancelled

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
            try:
                await app.workers.wait_for_complete(others)
            except WorkerCancelled:
                pass  # an exclusive worker that a newer one replaced: the next round waits on that one
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
    append_eval(ws.runs_dir / RUN_DONE, suite_record_of(RUN_DONE, 300, {"arc_easy": (0.4375, 0.25),
                                                                        "piqa": (0.5625, 0.5)}))


def suite_record_of(run: str, step: int, scores: dict[str, tuple[float, float]], suite: str = "core") -> dict:
    """An evals.jsonl record of a benchmark suite (engine.lmeval.runner.suite_record's shape): per task
    (acc_norm, chance)."""
    from engine.lmeval import SUITE_KIND, aggregate, centred

    tasks = {t: {"metric": "acc_norm", "score": acc, "chance": chance, "centred": centred(acc, chance), "n": 16,
                 "num_fewshot": 0, "version": 1.0, "metrics": {"acc": acc, "acc_norm": acc}}
             for t, (acc, chance) in scores.items()}
    return {"kind": SUITE_KIND, "suite": suite, "run": run, "stage": "base", "step": step,
            "checkpoint": f"ckpt/step-{step}", "checkpoint_sha256": "ab" * 32, "export": f"exports/hf-f32-step{step}",
            "export_manifest": {}, "merged_lora": False, "time": 0.0, "seconds": 12.5, "device": "cpu",
            "lm_eval_version": "0.4.13", "limits": {"limit": 16},
            "metrics": {"tasks": tasks, "centred": aggregate(tasks)},
            "examples": {}, "notes": []}


def stop_supervisor(ws: Workspace) -> None:
    """Stop the supervisor a test started (an idle one exits by itself; don't leave it behind)."""
    import os
    import signal
    import time

    from engine.jobs.procs import supervisor_pid

    pid = supervisor_pid(ws)
    if pid and pid > 0:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while supervisor_pid(ws) is not None and time.monotonic() < deadline:
            time.sleep(0.1)


# -- a workspace of long values: what must never be clipped at 80x24 or 60x20 ---------------------

LONG_WS = "fcwork-workspace-of-the-fustercluck-450-campaign-on-the-laptop"
RUN_BIG = "20250103-080000-base"  # a long run: big step, token and memory numbers
BIG_STEPS = 1_500_000
LONG_ERROR = ("trainer crashed: OSError: [Errno 28] No space left on device: '/Users/owner/fcwork/runs/"
              "20250103-090000-anneal/ckpt/.step-1200.tmp/optimizer.safetensors' while writing the checkpoint "
              "of step 1200 (free some space, then r resumes from step 1100)")
RUN_FAILED = "20250103-090000-anneal"


def big_events(last: int = 1_234_567, points: int = 240) -> list[dict]:
    """A long run's events: steps up to `last` of BIG_STEPS at 1.23M tokens/s and 12.3 GB, two mix changes."""
    evs: list[dict] = [{"type": "status", "time": T0, "state": "running", "step": 0, "max_steps": BIG_STEPS,
                        "pid": 4242, "device": "cuda"}]
    mixes = [(0, dict(MIX)), (400_000, {"science": 0.1, "code": 0.5, "chess": 0.1, "data": 0.2, "chat": 0.1}),
             (900_000, {"science": 0.25, "code": 0.25, "chess": 0.25, "data": 0.15, "chat": 0.1})]
    for i in range(1, points + 1):
        step = last * i // points
        mix = [m for s, m in mixes if s <= step][-1]
        for s, m in mixes[1:]:
            if last * (i - 1) // points < s <= step:
                evs.append({"type": "mix", "time": T0 + i, "step": s, "mix": dict(m), "request_id": mixes.index((s, m))})
        ev = step_event(step, mix, t=T0 + step / 150)
        ev.update(loss=round(2.0 + 4.0 * math.exp(-i / 30) + 0.05 * math.sin(i), 5), tokens=step * 184_320,
                  tokens_per_s=1_228_800.0 + 1000 * math.sin(i), mem_bytes=12_345_678_901 + i * 1000,
                  grad_norm=round(0.9 + 0.3 * math.exp(-i / 50) + 0.02 * math.sin(i * 3), 5),
                  mfu=0.412, domain_loss={d: round(2.0 + 4.0 * math.exp(-i / 30) + 0.3 * j + 0.2 * math.sin(i * (j + 1)), 5)
                                          for j, d in enumerate(DOMAINS)})
        evs.append(ev)
        if i % 60 == 0:
            evs.append(dict(eval_event(step), loss=round(2.3 + 4.0 * math.exp(-i / 30), 5)))
    return evs


def make_long_workspace(root: Path) -> Workspace:
    """make_workspace's runs and queue, in a folder with a long name under `root`, plus a long run with big
    numbers (the one running) and a failed entry whose message is a long error with a long path."""
    ws = make_workspace(root / LONG_WS)
    live = make_run(ws, RUN_BIG, big_events(), max_steps=BIG_STEPS)
    (live / "trainer.log").write_text("".join(f"INFO step {1_234_000 + i}: loss 2.01{i % 10}\n" for i in range(30))
                                      + LONG_ERROR + "\n", encoding="utf-8")
    failed = make_run(ws, RUN_FAILED, run_events(40, mix_at=None)[:45], stage="anneal")
    (failed / "trainer.log").write_text(f"INFO starting\nERROR {LONG_ERROR}\n", encoding="utf-8")
    out = RunDir(live).exports_dir / "gguf-q8-step1200000"
    out.mkdir(parents=True)
    (out / "model.gguf").write_bytes(b"\0" * 4096)
    write_queue(ws, [
        QueueEntry(id=1, profile="default", stage="base", state="done", run_id=RUN_DONE, message="finished",
                   added=T0 - 7200),
        QueueEntry(id=2, profile="default", stage="base", state="cancelled", run_id=RUN_LIVE,
                   message="cancelled at step 120 (checkpoint step-100 kept)", added=T0 - 60),
        QueueEntry(id=3, profile="default", stage="base", state="running", run_id=RUN_BIG, message="running",
                   added=T0),
        QueueEntry(id=4, profile="default", stage="anneal", state="failed", run_id=RUN_FAILED, message=LONG_ERROR,
                   added=T0 + 1),
    ])
    return ws


def screen_lines(app) -> list[str]:
    """What the terminal shows now, one string per row (the top screen over the ones under it)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def shown(app, text: str) -> bool:
    """Whether `text` is on screen whole: on one row, or wrapped (at a space or inside a word) over
    rows that follow each other, inside a box or beside a focus bar."""
    lines = screen_lines(app)
    if any(text in line for line in lines):
        return True
    def inside(line: str) -> str:  # a dialog's row: what is between its borders, not the screen beside it
        if line.count("\u2502") >= 2:
            return line[line.index("\u2502") + 1:line.rindex("\u2502")]
        return line

    frame = str.maketrans("", "", "\u258c\u2502\u256d\u256e\u2570\u256f\u2500 \t")
    flat = "".join(inside(line).translate(frame) for line in lines)
    return text.translate(frame) in flat
