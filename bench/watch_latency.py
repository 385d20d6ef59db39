"""How soon the workbench's watcher sees a file change: notifications (watchfiles) against polling.

For each mode the watcher runs in its thread on a fresh workspace; each round rewrites
queue.toml, or appends a step event to a run's events.jsonl, and times until the watcher has
posted the queue or read the step. The baseline is the watcher with notifications off, polling
every 0.25 s (the app's setting). Prints median and p90 latencies and the ratio.

    flock /tmp/bench.lock .venv/bin/python bench/watch_latency.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.workspace import Workspace  # noqa: E402
from fcwork.messages import QueueChanged  # noqa: E402
from engine.jobs.history import RunStore  # noqa: E402
from fcwork.watch import POLL_S, WorkspaceWatcher  # noqa: E402

QUEUE = '[[entries]]\nid = {n}\nprofile = "default"\nstage = "base"\nstate = "queued"\nrun_id = ""\nrestarts = 0\n' \
        'message = ""\nadded = 1.0\npid = 0\ncancel_requested = false\n'


def measure(fs_events: bool, rounds: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ws.init()
        run = ws.runs_dir / "20261126-000000-base"
        run.mkdir()
        (run / "stage.toml").write_text('[run]\nprofile = "default"\nstage = "base"\n[stage]\nmax_steps = 100000\n')
        (run / "events.jsonl").write_text("")
        seen_queue: list[tuple[int, float]] = []

        def post(msg) -> None:
            if isinstance(msg, QueueChanged) and msg.entries:
                seen_queue.append((msg.entries[0].id, time.perf_counter()))

        store = RunStore()
        w = WorkspaceWatcher(ws, store, post, "default", POLL_S, fs_events)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        time.sleep(1.5)  # first passes, notifications flowing
        out: dict[str, list[float]] = {"queue.toml": [], "events.jsonl": []}
        for n in range(1, rounds + 1):
            time.sleep(0.13 + (n % 7) * 0.031)  # not in step with the poll interval
            tmp_q = ws.queue_path.with_suffix(".tmp")
            tmp_q.write_text(QUEUE.format(n=n))
            start = time.perf_counter()
            os.replace(tmp_q, ws.queue_path)
            while not seen_queue or seen_queue[-1][0] != n:
                time.sleep(0.0005)
            out["queue.toml"].append(seen_queue[-1][1] - start)

            time.sleep(0.11 + (n % 5) * 0.037)
            line = json.dumps({"type": "step", "time": time.time(), "step": n, "loss": 1.0, "tokens": n}) + "\n"
            start = time.perf_counter()
            with open(run / "events.jsonl", "a") as fh:
                fh.write(line)
            while store.history(run.name).step != n:
                time.sleep(0.0005)
            out["events.jsonl"].append(time.perf_counter() - start)
        w.stop()
        t.join(timeout=5)
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    args = p.parse_args()
    notified = measure(True, args.rounds)
    polled = measure(False, args.rounds)
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    for what in ("queue.toml", "events.jsonl"):
        a, b = notified[what], polled[what]
        pa, pb = (sorted(x)[int(0.9 * (len(x) - 1))] for x in (a, b))
        print(f"{what:13s} notifications: median {statistics.median(a) * 1e3:6.1f} ms  p90 {pa * 1e3:6.1f} ms | "
              f"polling every {POLL_S} s: median {statistics.median(b) * 1e3:6.1f} ms  p90 {pb * 1e3:6.1f} ms | "
              f"median ratio {statistics.median(b) / statistics.median(a):.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
