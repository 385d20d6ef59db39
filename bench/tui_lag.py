"""Event-loop lag of the `fcwork` app while a run's events.jsonl grows by 10,000 events a second,
against the same app on the same workspace with no stream, in the same run.

The app runs headless in this process with the Metrics pane shown (the costliest redraw); a
probe on its event loop sleeps 10 ms again and again and records how late each wake-up is: the
time a key press would wait. A child process appends step events at the target rate, in
batches of 100 (as a fast trainer's buffered writes arrive). Prints p50/p99/max lag for both,
the events the app ingested, the ratio of p99s and the machine; the target is p99 < 50 ms.

    flock /tmp/bench.lock .venv/bin/python bench/tui_lag.py [--seconds 6] [--rate 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "tui"))

from tui_fixtures import RUN_LIVE, make_app, make_workspace, settle, step_event  # noqa: E402

WRITER = """
import json, sys, time
path, rate, seconds, first = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
head, tail = json.dumps(json.loads(sys.argv[5]), separators=(",", ":")).split('"step":0', 1)
n = int(rate * seconds)
start = time.monotonic()
with open(path, "a") as fh:
    for i in range(0, n, 100):  # lines made from a template: the writer's own CPU stays small
        fh.write("".join(head + '"step":' + str(first + i + j) + tail + "\\n" for j in range(100)))
        fh.flush()
        time.sleep(max(0.0, start + (i + 100) / rate - time.monotonic()))
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(stream: bool, seconds: float, rate: int) -> dict:
    ws = make_workspace(Path(tempfile.mkdtemp(prefix="fcwork-lag-")) / "ws", live_steps=200)
    events = ws.runs_dir / RUN_LIVE / "events.jsonl"
    app = make_app(ws)
    app.watcher.poll_s = 0.25  # the app's own default, not the tests' fast polling
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("f4")
        await settle(pilot, app)
        proc = None
        if stream:
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(events), str(rate), str(seconds), "201",
                                     json.dumps(dict(step_event(201), step=0))], stdin=subprocess.DEVNULL)
        lags: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t0 - 0.01)
        if proc is not None:
            proc.wait()
            target = 200 + int(rate * seconds)
            deadline = time.perf_counter() + 30
            while app.store.runs[RUN_LIVE].step < target and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        ingested = app.store.runs[RUN_LIVE].steps_seen - 200
    return {"p50": pct(lags, 0.5), "p99": pct(lags, 0.99), "max": max(lags), "samples": len(lags),
            "ingested": ingested, "mean": statistics.mean(lags)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=int, default=10_000)
    args = parser.parse_args()
    quiet = asyncio.run(measure(False, args.seconds, args.rate))
    loud = asyncio.run(measure(True, args.seconds, args.rate))
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}")
    for name, r in (("no stream", quiet), (f"{args.rate:,} events/s", loud)):
        print(f"{name:>18}: loop lag p50 {r['p50'] * 1000:6.1f} ms  p99 {r['p99'] * 1000:6.1f} ms  "
              f"max {r['max'] * 1000:6.1f} ms  ({r['samples']} probes, {r['ingested']:,} events ingested)")
    print(f"p99 lag, stream / no stream: {loud['p99'] / max(quiet['p99'], 1e-4):.2f}x; "
          f"p99 under the stream {loud['p99'] * 1000:.1f} ms (target < 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
