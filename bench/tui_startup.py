"""Start-up of `fcwork` (the TUI, on a workspace with a queue and two runs) to its first paint,
against a minimal Textual app (one Label), both launched the same way in the same run.

Each app runs in a subprocess on a pseudo-terminal (the real terminal driver, as over SSH) with
FCWORK_TUI_EXIT_AFTER_PAINT=1, which makes it exit right after its first paint; the time is
spawn to exit. Rounds alternate between the two so machine noise hits both alike. Prints the
medians, the ratio (target: at most 1.5x) and the machine.

    flock /tmp/bench.lock .venv/bin/python bench/tui_startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "tui"))

MINIMAL_APP = """
import os
from textual.app import App
from textual.widgets import Label

class Minimal(App):
    def compose(self):
        yield Label("hello")

    def on_mount(self):
        self.call_after_refresh(self.exit)

Minimal().run()
"""


def time_on_pty(cmd: list[str], env: dict[str, str], timeout: float = 60) -> float:
    """Seconds from spawning `cmd` on a fresh 80x24 pseudo-terminal until it exits."""
    master, slave = pty.openpty()
    os.set_blocking(master, True)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    stop = threading.Event()

    def drain() -> None:  # a terminal that never reads would block the app's writes
        while not stop.is_set():
            try:
                if not os.read(master, 65536):
                    return
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        os.close(slave)
        os.close(master)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit code {code}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from tui_fixtures import make_workspace

    ws = make_workspace(Path(tempfile.mkdtemp(prefix="fcwork-bench-")) / "ws", live_steps=2000)
    env = dict(os.environ, FCWORK_TUI_EXIT_AFTER_PAINT="1", TERM="xterm-256color", COLUMNS="80", LINES="24")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    ours_cmd = [sys.executable, "-m", "fcwork.cli", "--workspace", str(ws.root)]
    base_cmd = [sys.executable, "-c", MINIMAL_APP]
    time_on_pty(base_cmd, env)  # warm the OS file cache for both
    time_on_pty(ours_cmd, env)
    ours, base = [], []
    for _ in range(args.rounds):
        base.append(time_on_pty(base_cmd, env))
        ours.append(time_on_pty(ours_cmd, env))
    mo, mb = statistics.median(ours), statistics.median(base)
    def ms(times: list[float]) -> str:
        return ", ".join(f"{t * 1000:.0f}" for t in times)

    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}")
    print(f"minimal Textual app to first paint: median {mb * 1000:.0f} ms  ({ms(base)})")
    print(f"fcwork to first paint:              median {mo * 1000:.0f} ms  ({ms(ours)})")
    print(f"ratio fcwork / minimal: {mo / mb:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
