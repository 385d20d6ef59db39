"""Process helpers of the jobs layer: the children's environment, starting the trainer and the
supervisor detached (each holding its lock file, engine.jobs.locks, for its whole life), keeping
a Mac awake while a trainer runs, and exit statuses (and a log's last error) in words.

A stage on more than one device (its `devices` x `nodes`) is launched through torchrun
(`python -m torch.distributed.run`, this interpreter's), which starts one trainer per device; the
launcher is the process that holds the trainer lock, and its ranks end with it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.errors import FcError, SupervisorError
from engine.jobs.locks import holder_pid, locked, open_lock, read_pid, try_flock, write_pid
from engine.jobs.rundir import RunDir
from engine.workspace import Workspace

SUPERVISOR_LOCK = "supervisor.lock"
START_LOCK = "supervisor.start.lock"
SUPERVISOR_LOG = "supervisor.log"
TRAINER_MODULE = "engine.train"
TRAINER_START_MARK = "=== trainer started"  # the line spawn_trainer writes in trainer.log before each attempt
TORCHRUN_MODULE = "torch.distributed.run"
RDZV_ENV = "FCWORK_RDZV_ENDPOINT"  # HOST:PORT of the rendezvous, for stages on more than one node
SUPERVISOR_MODULE = "engine.jobs.supervisor"
DEFAULT_IDLE_S = 5.0  # how long an idle supervisor waits for new entries before exiting

_SPAWNED: list[subprocess.Popen] = []  # supervisors this process started, reaped when they end
_REPO_ROOT = Path(__file__).resolve().parents[2]


def supervisor_pid(ws: Workspace) -> int | None:
    """The pid of the supervisor running for this workspace, or None."""
    return holder_pid(ws.root / SUPERVISOR_LOCK)


def trainer_pid(run_dir: str | os.PathLike) -> int | None:
    """The pid of the trainer running in this run folder, or None."""
    return holder_pid(RunDir(run_dir).trainer_lock)


# -- children ---------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    """The environment for our children: this checkout's engine first on the path, unbuffered output."""
    env = dict(os.environ)
    paths = [str(_REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class LaunchError(SupervisorError):
    """The trainer cannot be launched as its stage asks; no restart would help (the user's to fix)."""


def trainer_command(run_dir: Path, devices: int = 1, nodes: int = 1, endpoint: str = "") -> list[str]:
    """`python -m engine.train RUN_DIR`, through torchrun for more than one device: `--standalone` on
    one node, else a c10d rendezvous at `endpoint` (HOST:PORT) whose id is the run's."""
    train = ["-m", TRAINER_MODULE, str(run_dir)]
    if devices * nodes == 1:
        return [sys.executable, *train]
    cmd = [sys.executable, "-m", TORCHRUN_MODULE, "--nproc-per-node", str(devices)]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        cmd += ["--nnodes", str(nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", Path(run_dir).name]
    return cmd + train


def launch_command(run: RunDir) -> list[str]:
    """The command that trains `run` as its frozen stage says (devices, nodes); LaunchError when a
    stage on several nodes has no rendezvous endpoint in $FCWORK_RDZV_ENDPOINT."""
    try:
        meta = run.meta()
        devices, nodes = meta.devices, meta.nodes
    except FcError:  # an unreadable stage.toml: the trainer says what is wrong with it
        devices = nodes = 1
    endpoint = os.environ.get(RDZV_ENV, "")
    if nodes > 1 and not endpoint:
        raise LaunchError(f"{run.stage_file}: stage.nodes = {nodes}: set {RDZV_ENV}=HOST:PORT (a free port on "
                          "the first node) where the supervisor runs, and start the other nodes as the README says")
    return trainer_command(run.path, devices, nodes, endpoint)


def spawn_trainer(run_dir: str | os.PathLike, patience_s: float = 1.0) -> subprocess.Popen:
    """Start the trainer for `run_dir` in its own session, holding its trainer lock for its
    whole life (the lock's fd is handed to it: torchrun's launcher for a stage on several
    devices); refuse when a trainer already runs there."""
    run = RunDir(run_dir)
    command = launch_command(run)
    run.clear_rank_failures()  # what ranks of an earlier launch said is not this launch's
    fd = open_lock(run.trainer_lock)
    try:
        if not try_flock(fd, patience_s):
            raise SupervisorError(f"{run.path}: a trainer (pid {read_pid(run.trainer_lock)}) already runs for this run")
        try:
            with open(run.trainer_log, "ab") as out:
                out.write(f"\n{TRAINER_START_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, pass_fds=(fd,), env=child_env(), cwd=run.path,
                )
        except OSError as exc:
            raise SupervisorError(f"{run.path}: cannot start the trainer ({exc.strerror})") from None
        write_pid(fd, proc.pid)
        return proc
    finally:
        os.close(fd)  # the trainer keeps its inherited copy, and with it the lock


def ensure_supervisor(ws: Workspace, idle_s: float = DEFAULT_IDLE_S, timeout_s: float = 30.0) -> int:
    """Return the pid of the workspace's supervisor, starting a detached one if none runs."""
    _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]
    with locked(ws.root / START_LOCK):  # one starter at a time
        pid = supervisor_pid(ws)
        if pid is not None:
            return pid
        log_path = ws.root / SUPERVISOR_LOG
        with open(log_path, "ab") as out:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", SUPERVISOR_MODULE, str(ws.root), "--idle", str(idle_s)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, env=child_env(), cwd=ws.root,
                )
            except OSError as exc:
                raise SupervisorError(f"{ws.root}: cannot start the supervisor ({exc.strerror})") from None
        _SPAWNED.append(proc)
        # Reap it when it exits, so a long-lived parent (the TUI) keeps no zombie.
        threading.Thread(target=proc.wait, name=f"reap-supervisor-{proc.pid}", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if read_pid(ws.root / SUPERVISOR_LOCK) == proc.pid:
                return proc.pid
            if proc.poll() is not None:
                pid = supervisor_pid(ws)
                if pid is not None:
                    return pid
                raise SupervisorError(f"{log_path}: the supervisor exited at start with code {proc.returncode}: "
                                      f"{last_line(log_path) or 'no output'}")
            time.sleep(0.02)
        raise SupervisorError(f"{log_path}: the supervisor (pid {proc.pid}) did not take {SUPERVISOR_LOCK} within {timeout_s:.0f} s")


# -- keeping a Mac awake -------------------------------------------------------------------

class KeepAwake:
    """On macOS, a power assertion against idle sleep while a trainer runs: `caffeinate -i -w PID`,
    which also ends by itself when that process does. A Mac left alone sleeps when idle even on
    power, and a stage started over SSH would stall until someone woke it; display sleep and a
    closed lid are left to the user. Elsewhere (or without caffeinate) this does nothing."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.pid = 0  # the process it keeps the machine awake for

    def hold(self, pid: int) -> None:
        """Keep the machine awake while `pid` runs (replacing an assertion held for another)."""
        if self.proc is not None and self.proc.poll() is None and self.pid == pid:
            return
        self.release()
        exe = shutil.which("caffeinate") if sys.platform == "darwin" and pid > 0 else None
        if exe is None:
            return
        try:
            self.proc = subprocess.Popen([exe, "-i", "-w", str(pid)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
            self.pid = pid
        except OSError:
            self.proc = None  # no assertion is no reason to stop training

    def release(self) -> None:
        """Let the machine sleep again."""
        proc, self.proc, self.pid = self.proc, None, 0
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- describing how a process ended -------------------------------------------------------

def _tail_lines(path: Path, size: int) -> list[str]:
    """The lines of a log's last `size` bytes (the first may be cut); none when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log file (for failure messages), trimmed to `limit` chars."""
    lines = [ln.strip() for ln in _tail_lines(path, 16384) if ln.strip() and not ln.startswith("===")]
    return lines[-1][:limit] if lines else ""


_LOG_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b:?\s*(.*)")


def error_line(path: Path, limit: int = 300) -> str:
    """The last error a log shows since its last trainer start, as a crash reason: the exception
    line of its last traceback, or the message of its last ERROR line; "" when it shows none (an
    INFO line, such as the last checkpoint's, says nothing of why a process ended)."""
    lines = _tail_lines(path, 65536)
    starts = [i for i, ln in enumerate(lines) if ln.startswith(TRAINER_START_MARK)]
    lines = lines[starts[-1] + 1:] if starts else lines
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith("Traceback (most recent call last)"):
            # Frames are indented; the first line after them that is not names the exception.
            exc = next((ln.strip() for ln in lines[i + 1:] if ln.strip() and not ln[0].isspace()), "")
            if exc:
                return exc[:limit]
            continue
        level = _LOG_LEVEL.search(line)
        message = level.group(2).strip() if level else ""
        if level and level.group(1) in ("ERROR", "CRITICAL") and message and message != "crash:":
            return message[:limit]
    return ""


def describe_exit(rc: int) -> str:
    """An exit status in words: `exit code 1`, `killed by SIGKILL`."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"
