"""The detached supervisor: runs the queued stages of one workspace one after another.

`ensure_supervisor(ws)` starts `python -m engine.jobs.supervisor WORKSPACE` in its own session
(stdin closed, output to `<ws>/supervisor.log`) unless one already holds `supervisor.lock`.
The supervisor takes the first queued entry, creates its run, spawns the trainer
(`python -m engine.train RUN_DIR`, own session, output to RUN_DIR/trainer.log) and waits:
exit 0 means done (or cancelled when it stopped), exit 2 a user error (failed, no restart),
anything else a crash (restarted up to the stage's `max_restarts`, then failed).

Trainer liveness: the supervisor takes an flock on RUN_DIR/trainer.lock and hands that open
file to the trainer (pass_fds), then closes its own copy, so the lock is held exactly as long
as the trainer lives, whoever its parent is. A new supervisor that finds an entry left
`running` by a supervisor that died tries that lock: held means the trainer still runs, and it
waits for the lock instead of starting a second trainer; free means the trainer ended, and its
events say how.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from engine.compat import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from engine.errors import FcError, QueueError, SupervisorError
from engine.workspace import Workspace

SUPERVISOR_LOCK = "supervisor.lock"
START_LOCK = "supervisor.start.lock"
SUPERVISOR_LOG = "supervisor.log"
TRAINER_LOCK = "trainer.lock"
TRAINER_LOG = "trainer.log"
TRAINER_MODULE = "engine.train"
DEFAULT_IDLE_S = 5.0       # how long an idle supervisor waits for new entries before exiting
STOP_TIMEOUT_S = 120.0     # after a stop request, how long before the trainer gets SIGTERM
POLL_S = 0.25
EXIT_USER_ERROR = 2

log = logging.getLogger("fcwork.supervisor")
_SPAWNED: list[subprocess.Popen] = []  # supervisors this process started, reaped when they end
_REPO_ROOT = Path(__file__).resolve().parents[2]


# -- lock files ---------------------------------------------------------------------------

def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _try_flock(fd: int, patience_s: float = 0.0) -> bool:
    """Take an exclusive flock without blocking; retry for `patience_s` (a probe by another
    process holds the lock for an instant, which must not read as "taken")."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _write_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def holder_pid(lock_path: Path) -> int | None:
    """The pid written in a lock file whose flock is held now, or None when nobody holds it."""
    if not lock_path.exists():
        return None
    fd = _open_lock(lock_path)
    try:
        if _try_flock(fd):
            return None
        return _read_pid(lock_path) or -1
    finally:
        os.close(fd)


def supervisor_pid(ws: Workspace) -> int | None:
    """The pid of the supervisor running for this workspace, or None."""
    return holder_pid(ws.root / SUPERVISOR_LOCK)


def trainer_pid(run_dir: Path) -> int | None:
    """The pid of the trainer running in this run folder, or None."""
    return holder_pid(Path(run_dir) / TRAINER_LOCK)


# -- spawning ---------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    """The environment for our children: this checkout's engine first on the path, unbuffered output."""
    env = dict(os.environ)
    paths = [str(_REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def trainer_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", TRAINER_MODULE, str(run_dir)]


def spawn_trainer(run_dir: Path, patience_s: float = 1.0) -> subprocess.Popen:
    """Start the trainer for `run_dir` in its own session, holding RUN_DIR/trainer.lock for its
    whole life; refuse when a trainer already runs there."""
    run_dir = Path(run_dir)
    fd = _open_lock(run_dir / TRAINER_LOCK)
    try:
        if not _try_flock(fd, patience_s):
            raise SupervisorError(f"{run_dir}: a trainer (pid {_read_pid(run_dir / TRAINER_LOCK)}) already runs for this run")
        with open(run_dir / TRAINER_LOG, "ab") as out:
            out.write(f"\n=== trainer started {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    trainer_command(run_dir), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, pass_fds=(fd,), env=child_env(), cwd=run_dir,
                )
            except OSError as exc:
                raise SupervisorError(f"{run_dir}: cannot start the trainer ({exc.strerror})") from None
        _write_pid(fd, proc.pid)
        return proc
    finally:
        os.close(fd)  # the trainer keeps its inherited copy, and with it the lock


def ensure_supervisor(ws: Workspace, idle_s: float = DEFAULT_IDLE_S, timeout_s: float = 30.0) -> int:
    """Return the pid of the workspace's supervisor, starting a detached one if none runs."""
    _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]
    start_fd = _open_lock(ws.root / START_LOCK)
    try:
        fcntl.flock(start_fd, fcntl.LOCK_EX)  # one starter at a time
        pid = supervisor_pid(ws)
        if pid is not None:
            return pid
        log_path = ws.root / SUPERVISOR_LOG
        with open(log_path, "ab") as out:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "engine.jobs.supervisor", str(ws.root), "--idle", str(idle_s)],
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
            if _read_pid(ws.root / SUPERVISOR_LOCK) == proc.pid:
                return proc.pid
            if proc.poll() is not None:
                pid = supervisor_pid(ws)
                if pid is not None:
                    return pid
                raise SupervisorError(f"{log_path}: the supervisor exited at start with code {proc.returncode}: "
                                      f"{last_line(log_path) or 'no output'}")
            time.sleep(0.02)
        raise SupervisorError(f"{log_path}: the supervisor (pid {proc.pid}) did not take {SUPERVISOR_LOCK} within {timeout_s:.0f} s")
    finally:
        os.close(start_fd)


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log file (for failure messages), trimmed to `limit` chars."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.startswith("===")]
    return lines[-1][:limit] if lines else ""


# -- the supervisor loop -----------------------------------------------------------------

@dataclass
class Outcome:
    """How one trainer attempt ended: finished, stopped, error (user error), crash or abandoned."""

    kind: str
    message: str
    step: int = 0


def stage_max_restarts(run_dir: Path) -> int:
    """`[stage] max_restarts` of the run's frozen stage.toml (2 when absent)."""
    path = Path(run_dir) / "stage.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SupervisorError(f"{path}: cannot read the run's stage ({exc})") from None
    value = data.get("stage", {}).get("max_restarts", 2)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SupervisorError(f"{path}: stage.max_restarts: expected a non-negative integer, got {value!r}")
    return value


def describe_exit(rc: int) -> str:
    """An exit status in words: `exit code 1`, `killed by SIGKILL`."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


class Supervisor:
    """One workspace's queue runner; `run()` returns when nothing is left or on SIGTERM."""

    def __init__(self, ws: Workspace, idle_s: float = DEFAULT_IDLE_S, stop_timeout_s: float = STOP_TIMEOUT_S):
        from engine.jobs.queue import StageQueue

        self.ws = ws
        self.queue = StageQueue(ws)
        self.idle_s = idle_s
        self.stop_timeout_s = stop_timeout_s
        self.stopping = False
        self._lock_fd: int | None = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("got %s: stopping the current trainer cleanly, then exiting", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        lock_path = self.ws.root / SUPERVISOR_LOCK
        fd = _open_lock(lock_path)
        if not _try_flock(fd, patience_s=2.0):
            os.close(fd)
            log.info("another supervisor (pid %s) holds %s; exiting", _read_pid(lock_path), lock_path)
            return 0
        self._lock_fd = fd
        _write_pid(fd, os.getpid())
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("supervisor %d up for %s", os.getpid(), self.ws.root)
        try:
            self._loop()
        finally:
            self._release()
        log.info("supervisor %d exits", os.getpid())
        return 0

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _loop(self) -> None:
        idle_since: float | None = None
        while not self.stopping:
            try:
                claimed = self.queue.claim_next()
            except QueueError as exc:
                log.error("%s", exc)  # a broken queue.toml: wait for the user to fix it
                claimed = None
            if claimed is not None:
                idle_since = None
                entry, orphaned = claimed
                try:
                    self._work(entry.id, orphaned)
                except Exception as exc:  # never spin on an entry we cannot handle: fail it, go on
                    log.exception("entry %d: supervisor error", entry.id)
                    self._finish(entry.id, "failed", f"supervisor error: {exc}".splitlines()[0])
                continue
            now = time.monotonic()
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since >= self.idle_s:
                # Release our lock inside the queue lock, so an entry added from now on finds no
                # supervisor and its `start` spawns a new one: nothing is stranded.
                with self.queue.locked():
                    try:
                        pending = self.queue.has_work()
                    except QueueError:
                        pending = False
                    if not pending:
                        self._release()
                        return
                idle_since = None
            time.sleep(POLL_S)

    # -- one entry ---------------------------------------------------------------------

    def _finish(self, entry_id: int, state: str, message: str) -> None:
        log.info("entry %d: %s (%s)", entry_id, state, message)
        with contextlib.suppress(QueueError):
            self.queue.update(entry_id, state=state, message=message, pid=0, cancel_requested=False)

    def _work(self, entry_id: int, orphaned: bool = False) -> None:
        """Run one entry to a final state; `orphaned`: a dead supervisor left it running."""
        from engine.jobs.runs import create_run

        entry = self.queue.get(entry_id)
        if not entry.run_id:
            if entry.cancel_requested:
                return self._finish(entry_id, "cancelled", "cancelled before it started")
            try:
                profile = self.ws.load_profile(entry.profile)
                run_dir = Path(create_run(self.ws, profile, entry.stage))
            except FcError as exc:
                return self._finish(entry_id, "failed", str(exc))
            entry = self.queue.update(entry_id, run_id=run_dir.name, message="run created")
            log.info("entry %d: %s/%s -> run %s", entry_id, entry.profile, entry.stage, run_dir.name)
        run_dir = self.ws.runs_dir / entry.run_id
        try:
            max_restarts = stage_max_restarts(run_dir)
        except SupervisorError as exc:
            return self._finish(entry_id, "failed", str(exc))
        restarts = entry.restarts
        while True:
            out = self._attempt(entry_id, run_dir, orphaned)
            orphaned = False
            try:
                entry = self.queue.get(entry_id)
            except QueueError:
                return  # removed by hand while it ran
            where = f" at step {out.step}" if out.step else ""
            if out.kind == "abandoned":
                return  # the trainer outlived our stop timeout; the next supervisor adopts it
            if out.kind == "finished":
                return self._finish(entry_id, "done", f"finished{where}")
            if out.kind == "stopped" or (out.kind == "crash" and (entry.cancel_requested or self.stopping)):
                if entry.cancel_requested:
                    return self._finish(entry_id, "cancelled", f"cancelled{where}")
                if self.stopping:
                    return self._finish(entry_id, "queued", f"interrupted{where} (supervisor stopped); resumes from its checkpoint")
                return self._finish(entry_id, "cancelled", f"stopped{where}")
            if out.kind == "error":
                return self._finish(entry_id, "failed", out.message)
            if restarts >= max_restarts:
                tries = f"after {restarts} restart{'s' if restarts != 1 else ''}" if restarts else "with no restarts allowed"
                self._event(run_dir, "error", message=f"giving up {tries}: {out.message}", source="supervisor")
                return self._finish(entry_id, "failed", f"crashed {tries}: {out.message}")
            restarts += 1
            log.info("entry %d: trainer crashed (%s); restart %d of %d", entry_id, out.message, restarts, max_restarts)
            self.queue.update(entry_id, restarts=restarts, pid=0,
                              message=f"restart {restarts}/{max_restarts} after: {out.message}")
            time.sleep(1.0)
            if self.stopping:
                return self._finish(entry_id, "queued", "interrupted (supervisor stopped); resumes from its checkpoint")

    def _attempt(self, entry_id: int, run_dir: Path, orphaned: bool = False) -> Outcome:
        """One trainer run: adopt a trainer that still runs, judge one that ended while no
        supervisor watched, else spawn one; wait and classify how it ended."""
        events_path = run_dir / "events.jsonl"
        running = trainer_pid(run_dir)
        if running is not None:
            log.info("entry %d: trainer pid %d still runs in %s; waiting for it", entry_id, running, run_dir.name)
            self.queue.update(entry_id, pid=max(running, 0), message=f"training (trainer pid {running}, adopted)")
            if self._wait(run_dir, running, None) == "abandoned":
                return Outcome("abandoned", "")
            return self._outcome(run_dir, None, None)
        if orphaned and _statuses(run_dir):
            return self._outcome(run_dir, None, None)
        if self.stopping:
            return Outcome("stopped", "not started: supervisor stopping")
        if self.queue.get(entry_id).cancel_requested:
            return Outcome("stopped", "cancelled before the trainer started")
        offset = events_path.stat().st_size if events_path.exists() else 0
        try:
            proc = spawn_trainer(run_dir)
        except SupervisorError as exc:
            return Outcome("crash", str(exc))
        log.info("entry %d: trainer pid %d for %s", entry_id, proc.pid, run_dir.name)
        note = self.queue.get(entry_id).message
        self.queue.update(entry_id, pid=proc.pid, message=f"training ({note})" if note.startswith("restart") else "training")
        rc = self._wait(run_dir, proc.pid, proc)
        if rc == "abandoned":
            return Outcome("abandoned", "")
        return self._outcome(run_dir, offset, int(rc))

    def _wait(self, run_dir: Path, pid: int, proc: subprocess.Popen | None) -> int | str:
        """Wait for the trainer to end, passing on a supervisor stop as a control stop (then
        SIGTERM after the stop timeout). Returns its exit code, "gone" (not our child), or
        "abandoned" when it would not stop."""
        stop_sent: float | None = None
        while True:
            if proc is not None:
                rc = proc.poll()
                if rc is not None:
                    return rc
            elif trainer_pid(run_dir) is None:
                return "gone"
            if self.stopping:
                now = time.monotonic()
                if stop_sent is None:
                    stop_sent = now
                    self._request_stop(run_dir)
                elif now - stop_sent > self.stop_timeout_s + 30:
                    log.warning("trainer pid %d did not stop; leaving it running", pid)
                    return "abandoned"
                elif now - stop_sent > self.stop_timeout_s and pid > 0:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGTERM)
            time.sleep(POLL_S)

    def _request_stop(self, run_dir: Path) -> None:
        from engine.jobs.control import write_control

        try:
            write_control(run_dir, stop=True)
        except (FcError, OSError) as exc:
            log.error("%s: cannot write a stop request: %s", run_dir, exc)

    def _outcome(self, run_dir: Path, offset: int | None, rc: int | None) -> Outcome:
        """Classify an attempt from its exit code (None when it was not our child) and the
        events it wrote: after byte `offset`, or (None) since its last `starting` status."""
        from engine.jobs.events import read_events

        try:
            events, _ = read_events(run_dir / "events.jsonl", offset or 0)
        except (FcError, OSError, ValueError) as exc:
            log.error("%s: cannot read events: %s", run_dir, exc)
            events = []
        if offset is None:
            starts = [i for i, e in enumerate(events) if e.get("type") == "status" and e.get("state") == "starting"]
            events = events[starts[-1]:] if starts else events
        statuses = [e for e in events if e.get("type") == "status"]
        state = statuses[-1].get("state", "") if statuses else ""
        steps = [e.get("step") for e in events if isinstance(e.get("step"), int)]
        step = steps[-1] if steps else 0
        errors = [str(e.get("message", "")) for e in events
                  if e.get("type") == "error" and e.get("source", "trainer") != "control"]
        reason = errors[-1] if errors else (str(statuses[-1].get("message", "")) if state == "failed" else "")
        if rc == 0 or (rc is None and state in ("finished", "stopped")):
            return Outcome("stopped" if state in ("stopping", "stopped") else "finished", "", step)
        if rc == EXIT_USER_ERROR:
            return Outcome("error", reason or last_line(run_dir / TRAINER_LOG) or "trainer reported a user error", step)
        why = describe_exit(rc) if rc is not None else "trainer ended without a final status"
        if rc is not None and rc < 0:
            reason = why  # a signal says more than whatever the trainer logged before it
        elif not reason:
            tail = last_line(run_dir / TRAINER_LOG)
            reason = f"{why}: {tail}" if tail else why
        if state not in ("failed", "finished", "stopped"):
            self._event(run_dir, "status", state="failed", step=step, pid=0, message=reason)
        return Outcome("crash", reason, step)

    def _event(self, run_dir: Path, kind: str, **fields: Any) -> None:
        """Append an event on the trainer's behalf (it is not running when we do)."""
        from engine.jobs.events import EventWriter

        try:
            writer = EventWriter(run_dir / "events.jsonl")
            writer.write(kind, **fields)
            close = getattr(writer, "close", None)
            if close:
                close()
        except (FcError, OSError) as exc:
            log.error("%s: cannot append a %s event: %s", run_dir, kind, exc)


def _statuses(run_dir: Path) -> list[dict]:
    """The status events of a run so far."""
    from engine.jobs.events import read_events

    try:
        events, _ = read_events(Path(run_dir) / "events.jsonl", 0)
    except (FcError, OSError, ValueError):
        return []
    return [e for e in events if e.get("type") == "status"]


# -- entry point ---------------------------------------------------------------------------

@contextlib.contextmanager
def _logging_to_stderr() -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s supervisor[%(process)d] %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.jobs.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_S, help="seconds to wait idle before exiting")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S,
                        help="seconds a stopping trainer gets before SIGTERM")
    args = parser.parse_args(argv)
    with _logging_to_stderr():
        try:
            ws = Workspace.open(args.workspace)
            return Supervisor(ws, args.idle, args.stop_timeout).run()
        except FcError as exc:
            log.error("%s", exc)
            return 2


if __name__ == "__main__":
    sys.exit(main())
