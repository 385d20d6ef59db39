"""Helpers for the fault tests: the CLI in a subprocess, folders made unwritable for real (for root
too), the check that an error reached the user as one line and not as a traceback, a copy of the
trainer workspace with a stand-in for a trainer left running, and a faked Mac (sys.platform and a
fake `caffeinate` on PATH) for the supervisor run in this process."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
from engine.compat import tomllib
from pathlib import Path
from typing import Iterator

import pytest
import tomli_w

from tests.conftest import REPO
from tests.queue_fixtures import kill_workspace_processes


def fcwork(ws: Path | str, *args: str, stdin: bytes | None = None, timeout: float = 300,
           env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """`python -m fcwork.cli --workspace WS ARGS` from this checkout, output captured (bytes); `env`
    adds variables to ours, or removes those it sets to None."""
    merged = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env = {k: v for k, v in merged.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "fcwork.cli", "--workspace", str(ws), *args], cwd=REPO, env=full_env,
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True, timeout=timeout,
    )


def text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def one_error_line(result: subprocess.CompletedProcess, *parts: str) -> str:
    """The run failed with exactly one `fcwork: error:` line on stderr, holding each of `parts`."""
    err = text(result.stderr)
    assert result.returncode != 0, (text(result.stdout), err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fcwork: error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[str]:
    """Make folders and everything in them unwritable; yields the reason the OS will give.

    A user gets read-only permissions; root (whom permissions do not stop) gets the immutable
    attribute (chattr +i), and the test is skipped where the filesystem has none."""
    targets = [p for top in paths for p in [top, *sorted(top.rglob("*"))] if not p.is_symlink()]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in targets}
        for p in targets:
            os.chmod(p, stat.S_IMODE(modes[p]) & ~0o222)
        try:
            yield "Permission denied"
        finally:
            for p in reversed(targets):
                os.chmod(p, stat.S_IMODE(modes[p]))
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a folder read-only")
    try:
        done = subprocess.run(["chattr", "+i", *map(str, targets)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
        yield "Operation not permitted"
    finally:
        subprocess.run(["chattr", "-i", *map(str, targets)], capture_output=True)


# A stand-in for a trainer that a dead supervisor left running: it holds the run's trainer lock,
# has logged and written events as the trainer does, then waits to be killed.
FAKE_TRAINER = """
import os, sys, time
from engine.jobs import locks
from engine.jobs.rundir import RunDir
run = RunDir(sys.argv[1])
fd = locks.open_lock(run.trainer_lock)
assert locks.try_flock(fd)
locks.write_pid(fd, os.getpid())
with open(run.trainer_log, "a") as log:
    log.write(sys.argv[2])
with run.writer() as w:
    for state in ("starting", "running"):
        w.write("status", state=state, step=0, max_steps=40, pid=os.getpid(), device="cpu")
    w.write("checkpoint", step=10, path=str(run.checkpoint_path(10)))
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def trainer_ws(train_workspace, tmp_path):  # noqa: F811
    """A copy of the prepared trainer workspace; its processes are killed at teardown."""
    from engine.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(train_workspace.ws.root, root, ignore=shutil.ignore_patterns("runs", "queue.*", "supervisor.*"))
    ws = Workspace(root)
    ws.init()
    yield ws, train_workspace.profile
    kill_workspace_processes(root)


def make_run(ws, profile, stage: str, **overrides) -> Path:
    from engine.jobs.runs import create_run

    run = create_run(ws, profile, stage)
    doc = tomllib.loads((run / "stage.toml").read_text())
    doc["stage"].update(overrides)
    (run / "stage.toml").write_text(tomli_w.dumps(doc))
    return run


def start_fake_trainer(run: Path, log: str) -> subprocess.Popen:
    fake = subprocess.Popen([sys.executable, "-c", FAKE_TRAINER, str(run), log], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert fake.stdout.readline().strip() == "ready"
    return fake


# -- the Mac, faked ----------------------------------------------------------------------------

# Logs its pid and arguments, then does what `caffeinate -i -w PID` does: waits while PID lives
# (or, with FAKE_CAFFEINATE_LINGER=1, waits until it is ended, to show who ends it).
FAKE_CAFFEINATE = """#!/bin/sh
echo "$$ $*" >> "$FAKE_CAFFEINATE_LOG"
[ "$FAKE_CAFFEINATE_LINGER" = 1 ] && exec sleep 300
while kill -0 "$3" 2>/dev/null; do sleep 0.05; done
"""


@pytest.fixture
def fake_mac(tmp_path, monkeypatch) -> Path:
    """sys.platform says darwin and a fake `caffeinate` is first on PATH; returns the file where
    each start of it writes a line: its pid, then its arguments."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    exe = bin_dir / "caffeinate"
    exe.write_text(FAKE_CAFFEINATE)
    exe.chmod(0o755)
    log = tmp_path / "caffeinate.log"
    log.touch()
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_CAFFEINATE_LOG", str(log))
    yield log
    for line in log.read_text().splitlines():  # leave none behind, whatever the test did
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), 9)


def caffeinate_starts(log: Path) -> list[tuple[int, list[str]]]:
    """(pid, arguments) of each start of the fake caffeinate."""
    return [(int(pid), args.split()) for pid, args in (ln.split(" ", 1) for ln in log.read_text().splitlines())]


def run_supervisor_here(ws, idle_s: float = 0.5) -> int:
    """The real supervisor loop in this process (so that a faked platform reaches it), until the
    queue is idle; the signal handlers it installs are put back afterwards."""
    import signal

    from engine.jobs.supervisor import Supervisor

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        return Supervisor(ws, idle_s=idle_s).run()
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
