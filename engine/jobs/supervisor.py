"""The detached supervisor: runs the queued stages of one workspace one after another.

`procs.ensure_supervisor(ws)` starts `python -m engine.jobs.supervisor WORKSPACE` in its own session
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
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

from engine.errors import FcError, QueueError, SupervisorError
from engine.jobs import locks, procs
from engine.jobs.history import RunHistory
from engine.jobs.protocol import EXIT_USER_ERROR, EntryState, Event, RunState, Source
from engine.jobs.queue import MissingEntry, QueueEntry, StageQueue
from engine.jobs.rundir import RunDir
from engine.jobs.runs import create_run
from engine.workspace import Workspace

STOP_TIMEOUT_S = 120.0     # after a stop request, how long before the trainer gets SIGTERM
POLL_S = 0.25
# How an attempt ended, besides RunState.FINISHED and RunState.STOPPED.
USER_ERROR, CRASH, ABANDONED = "error", "crash", "abandoned"

log = logging.getLogger("fcwork.supervisor")


# -- the supervisor loop -----------------------------------------------------------------

@dataclass
class Outcome:
    """How one trainer attempt ended: finished, stopped, error (user error), crash or abandoned."""

    kind: str
    message: str
    step: int = 0


class Supervisor:
    """One workspace's queue runner; `run()` returns when nothing is left or on SIGTERM."""

    def __init__(self, ws: Workspace, idle_s: float = procs.DEFAULT_IDLE_S, stop_timeout_s: float = STOP_TIMEOUT_S):
        self.ws = ws
        self.queue = StageQueue(ws)
        self.idle_s = idle_s
        self.stop_timeout_s = stop_timeout_s
        self.stopping = False
        self._lock_fd: int | None = None
        # Final states the queue could not take (invalid or unwritable queue.toml): the run folder
        # holds the truth meanwhile; each pass tries to record them again.
        self.unrecorded: dict[int, tuple[str, str]] = {}
        self._reported: set[int] = set()  # unrecorded entries whose first failure was logged
        self.awake = procs.KeepAwake()  # macOS: no idle sleep while a trainer runs

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("got %s: stopping the current trainer cleanly, then exiting", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        lock_path = self.ws.root / procs.SUPERVISOR_LOCK
        fd = locks.open_lock(lock_path)
        if not locks.try_flock(fd, patience_s=2.0):
            os.close(fd)
            log.info("another supervisor (pid %s) holds %s; exiting", locks.read_pid(lock_path), lock_path)
            return 0
        self._lock_fd = fd
        locks.write_pid(fd, os.getpid())
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
        self.awake.release()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _loop(self) -> None:
        idle_since: float | None = None
        while not self.stopping:
            claimed = None
            if self._reconcile():
                try:
                    claimed = self.queue.claim_next()
                except (QueueError, OSError) as exc:
                    log.error("%s", exc)  # a broken or unwritable queue.toml: wait for the user to fix it
            if claimed is not None:
                idle_since = None
                entry, orphaned = claimed
                try:
                    self._work(entry.id, orphaned)
                except Exception as exc:  # never spin on an entry we cannot handle: fail it, go on
                    log.exception("entry %d: supervisor error", entry.id)
                    self._finish(entry.id, EntryState.FAILED, f"supervisor error: {exc}".splitlines()[0])
                continue
            now = time.monotonic()
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since >= self.idle_s and not self.unrecorded:
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
        self.unrecorded[entry_id] = (state, message)
        self._reconcile()

    def _reconcile(self) -> bool:
        """Record the final states the queue could not take before; True when none is left."""
        for entry_id, (state, message) in list(self.unrecorded.items()):
            try:
                self.queue.update(entry_id, state=state, message=message, pid=0, cancel_requested=False)
            except MissingEntry:
                log.info("entry %d was removed from the queue; its run folder keeps the result", entry_id)
            except (QueueError, OSError) as exc:
                if entry_id not in self._reported:
                    self._reported.add(entry_id)
                    log.error("entry %d: cannot record %s (%s); the run folder keeps the result, and it is "
                              "recorded once queue.toml can be written", entry_id, state, exc)
                continue
            self.unrecorded.pop(entry_id)
            if entry_id in self._reported:
                self._reported.discard(entry_id)
                log.info("entry %d: %s recorded now that queue.toml is usable again", entry_id, state)
        return not self.unrecorded

    def _note(self, entry_id: int, **changes: Any) -> None:
        """A progress note on the entry (pid, message, restarts); lost, not fatal, when the queue is unusable."""
        try:
            self.queue.update(entry_id, **changes)
        except (QueueError, OSError) as exc:
            log.warning("entry %d: cannot note %s in the queue: %s", entry_id, ", ".join(changes), exc)

    def _entry(self, entry_id: int, known: QueueEntry) -> QueueEntry | None:
        """The entry as the queue has it now; `known` while the queue is unusable; None once removed."""
        try:
            return self.queue.get(entry_id)
        except MissingEntry:
            return None
        except (QueueError, OSError) as exc:
            log.warning("entry %d: queue unreadable (%s); going on with what was known", entry_id, exc)
            return known

    def _work(self, entry_id: int, orphaned: bool = False) -> None:
        """Run one entry to a final state; `orphaned`: a dead supervisor left it running."""
        entry = self.queue.get(entry_id)
        if not entry.run_id:
            if entry.cancel_requested:
                return self._finish(entry_id, EntryState.CANCELLED, "cancelled before it started")
            try:
                profile = self.ws.load_profile(entry.profile)
                created = RunDir(create_run(self.ws, profile, entry.stage, entry.init_from))
            except FcError as exc:
                return self._finish(entry_id, EntryState.FAILED, str(exc))
            entry = self.queue.update(entry_id, run_id=created.id, message="run created")
            log.info("entry %d: %s/%s -> run %s", entry_id, entry.profile, entry.stage, created.id)
        run = RunDir(self.ws.runs_dir / entry.run_id)
        try:
            max_restarts = run.spec().stage.max_restarts
        except FcError as exc:
            return self._finish(entry_id, EntryState.FAILED, str(exc))
        restarts = entry.restarts
        while True:
            out = self._attempt(entry, run, orphaned)
            orphaned = False
            entry = self._entry(entry_id, entry)
            if entry is None:
                return  # removed by hand while it ran
            where = f" at step {out.step}" if out.step else ""
            if out.kind == ABANDONED:
                return  # the trainer outlived our stop timeout; the next supervisor adopts it
            if out.kind == RunState.FINISHED:
                return self._finish(entry_id, EntryState.DONE, f"finished{where}")
            if out.kind == RunState.STOPPED or (out.kind == CRASH and (entry.cancel_requested or self.stopping)):
                if entry.cancel_requested:
                    return self._finish(entry_id, EntryState.CANCELLED, f"cancelled{where}")
                if self.stopping:
                    return self._finish(entry_id, EntryState.QUEUED,
                                        f"interrupted{where} (supervisor stopped); resumes from its checkpoint")
                return self._finish(entry_id, EntryState.CANCELLED, f"stopped{where}")
            if out.kind == USER_ERROR:
                return self._finish(entry_id, EntryState.FAILED, out.message)
            if restarts >= max_restarts:
                tries = f"after {restarts} restart{'s' if restarts != 1 else ''}" if restarts else "with no restarts allowed"
                self._event(run, Event.ERROR, message=f"giving up {tries}: {out.message}", source=Source.SUPERVISOR)
                return self._finish(entry_id, EntryState.FAILED, f"crashed {tries}: {out.message}")
            restarts += 1
            log.info("entry %d: trainer crashed (%s); restart %d of %d", entry_id, out.message, restarts, max_restarts)
            entry.restarts, entry.message = restarts, f"restart {restarts}/{max_restarts} after: {out.message}"
            self._note(entry_id, restarts=restarts, pid=0, message=entry.message)
            time.sleep(1.0)
            if self.stopping:
                return self._finish(entry_id, EntryState.QUEUED, "interrupted (supervisor stopped); resumes from its checkpoint")

    def _attempt(self, entry: QueueEntry, run: RunDir, orphaned: bool = False) -> Outcome:
        """One trainer run: adopt a trainer that still runs, judge one that ended while no
        supervisor watched, else spawn one; wait and classify how it ended."""
        entry_id = entry.id
        running = run.trainer_pid()
        if running is not None:
            log.info("entry %d: trainer pid %d still runs in %s; waiting for it", entry_id, running, run.id)
            self._note(entry_id, pid=max(running, 0), message=f"training (trainer pid {running}, adopted)")
            if self._wait(run, running, None) == ABANDONED:
                return Outcome(ABANDONED, "")
            return self._outcome(run, None, None)
        if orphaned and any(e.get("type") == Event.STATUS for e in run.read_events()[0]):
            return self._outcome(run, None, None)
        if self.stopping:
            return Outcome(RunState.STOPPED, "not started: supervisor stopping")
        now = self._entry(entry_id, entry)
        if now is None or now.cancel_requested:
            return Outcome(RunState.STOPPED, "cancelled before the trainer started")
        offset = run.events_size()
        try:
            proc = procs.spawn_trainer(run.path)
        except procs.LaunchError as exc:
            return Outcome(USER_ERROR, str(exc))
        except SupervisorError as exc:
            return Outcome(CRASH, str(exc))
        log.info("entry %d: trainer pid %d for %s", entry_id, proc.pid, run.id)
        if procs.TORCHRUN_MODULE in proc.args:  # the command other nodes run too (README)
            log.info("entry %d: launched %s", entry_id, shlex.join(proc.args))
        note = now.message
        self._note(entry_id, pid=proc.pid, message=f"training ({note})" if note.startswith("restart") else "training")
        rc = self._wait(run, proc.pid, proc)
        if rc == ABANDONED:
            return Outcome(ABANDONED, "")
        return self._outcome(run, offset, int(rc))

    def _wait(self, run: RunDir, pid: int, proc: subprocess.Popen | None) -> int | str:
        """Wait for the trainer to end, passing on a supervisor stop as a control stop (then
        SIGTERM after the stop timeout). Returns its exit code, "gone" (not our child), or
        ABANDONED when it would not stop."""
        stop_sent: float | None = None
        self.awake.hold(pid)
        while True:
            if proc is not None:
                rc = proc.poll()
                if rc is not None:
                    return rc
            elif run.trainer_pid() is None:
                return "gone"
            if self.stopping:
                now = time.monotonic()
                if stop_sent is None:
                    stop_sent = now
                    self._request_stop(run)
                elif now - stop_sent > self.stop_timeout_s + 30:
                    log.warning("trainer pid %d did not stop; leaving it running", pid)
                    return ABANDONED
                elif now - stop_sent > self.stop_timeout_s and pid > 0:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGTERM)
            time.sleep(POLL_S)

    def _request_stop(self, run: RunDir) -> None:
        try:
            run.send_request(stop=True)
        except (FcError, OSError) as exc:
            log.error("%s: cannot write a stop request: %s", run.path, exc)

    def _outcome(self, run: RunDir, offset: int | None, rc: int | None) -> Outcome:
        """Classify an attempt from its exit code (None when it was not our child) and the
        events it wrote: after byte `offset`, or (None) since its last `starting` status."""
        try:
            events, _ = run.read_events(offset or 0)
        except (FcError, OSError, ValueError) as exc:
            log.error("%s: cannot read events: %s", run.path, exc)
            events = []
        if offset is None:
            starts = [i for i, e in enumerate(events)
                      if e.get("type") == Event.STATUS and e.get("state") == RunState.STARTING]
            events = events[starts[-1]:] if starts else events
        attempt = RunHistory(run.id)
        for ev in events:
            attempt.ingest(ev)
        state, step = attempt.state, attempt.step
        rc = _trainer_exit(events, rc)
        errors = [str(e.get("message", "")) for e in attempt.errors if e.get("source", Source.TRAINER) != Source.CONTROL]
        reason = errors[-1] if errors else (attempt.message if state == RunState.FAILED else "")
        if rc == 0 or (rc is None and state in (RunState.FINISHED, RunState.STOPPED)):
            stopped = state in (RunState.STOPPING, RunState.STOPPED)
            return Outcome(RunState.STOPPED if stopped else RunState.FINISHED, "", step)
        if rc == EXIT_USER_ERROR:
            return Outcome(USER_ERROR, reason or procs.error_line(run.trainer_log) or "trainer reported a user error", step)
        refused = [f for f in run.rank_failures() if f.get("exit_code") == EXIT_USER_ERROR] if rc else []
        if refused:  # a user error on another rank (out of memory there): the group's, not a crash to retry
            reason = f"rank {refused[0].get('rank')}: {refused[0].get('message', '')}"
            self._event(run, Event.ERROR, message=reason, source=Source.TRAINER)
            self._event(run, Event.STATUS, state=RunState.FAILED, step=step, pid=0, message=reason,
                        exit_code=EXIT_USER_ERROR)
            return Outcome(USER_ERROR, reason, step)
        why = procs.describe_exit(rc) if rc is not None else "trainer ended without a final status"
        if rc is not None and rc < 0:
            reason = why  # a signal says more than whatever the trainer logged before it
        elif not reason:
            tail = procs.error_line(run.trainer_log)  # never an INFO line: that says nothing of why it ended
            reason = f"{why}: {tail}" if tail else why
        if state not in RunState.FINAL:
            self._event(run, Event.STATUS, state=RunState.FAILED, step=step, pid=0, message=reason)
        return Outcome(CRASH, reason, step)

    def _event(self, run: RunDir, kind: str, **fields: Any) -> None:
        """Append an event on the trainer's behalf (it is not running when we do)."""
        try:
            with run.writer() as writer:
                writer.write(kind, **fields)
        except (FcError, OSError) as exc:
            log.error("%s: cannot append a %s event: %s", run.path, kind, exc)


def _trainer_exit(events: list[dict[str, Any]], rc: int | None) -> int | None:
    """The trainer's exit code: the one its final status event says, when it wrote one, over the
    process's (torchrun's launcher exits 1 whenever a rank fails, a user error or a crash alike)."""
    if rc in (None, 0):
        return rc
    last = next((e for e in reversed(events) if e.get("type") == Event.STATUS), {})
    said = last.get("exit_code")
    if last.get("state") in RunState.FINAL and isinstance(said, int) and not isinstance(said, bool):
        return said
    return rc


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
    parser = argparse.ArgumentParser(prog=f"python -m {procs.SUPERVISOR_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--idle", type=float, default=procs.DEFAULT_IDLE_S, help="seconds to wait idle before exiting")
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
