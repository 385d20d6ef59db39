"""The workspace watcher: one background thread that follows the files the app shows.

Each pass it stats queue.toml and the active profile (reading them again only when they
changed), looks for new run folders once a second, and reads one bounded chunk from every
run's events.jsonl into the RunStore: the running and focused runs first, so a reattaching
app shows the live stage before it has replayed old runs. It posts a message only when
something changed (never one per event); while any file has unread data it goes straight
on to the next pass, else it sleeps until a file changes or a `poke()`.

A second thread follows the workspace through watchfiles (inotify, FSEvents) and wakes the
pass as soon as queue.toml, a profile, a stage.toml or an events.jsonl changes; a pass every
FS_SAFETY_POLL_S covers what notifications miss (a profile outside the workspace). Where the
file system sends none, or watchfiles fails, the passes poll every `poll_s` instead.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from textual.message import Message

from engine.errors import FcError
from engine.workspace import QUEUE_FILE, Workspace
from fcwork.messages import ProfileChanged, QueueChanged, RunNotices, RunsChanged, WatchFailed
from engine.jobs.events import EventTail
from engine.jobs.protocol import RunState
from engine.jobs.rundir import FOLLOWED_FILES, STAGE_FILE, RunDir
from engine.jobs.history import RunStore

POLL_S = 0.25
SCAN_RUNS_S = 1.0
FS_SAFETY_POLL_S = 2.0
FOLLOWED = FOLLOWED_FILES | {QUEUE_FILE}


def file_stamp(path: Path) -> tuple | None:
    """(mtime, size, inode) of a file, None when it is not there: what says it changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class WorkspaceWatcher:
    """Polls queue.toml, the active profile and runs/*/events.jsonl; fills `store`, posts messages."""

    def __init__(self, ws: Workspace, store: RunStore, post: Callable[[Message], object],
                 profile_name: str = "default", poll_s: float = POLL_S, fs_events: bool = True) -> None:
        self.ws = ws
        self.store = store
        self.post = post
        self.poll_s = poll_s
        self.profile_name = profile_name
        self.focus: frozenset[str] = frozenset()  # runs to read first (set from the UI thread)
        self.tails: dict[str, EventTail] = {}
        self.caught_up: dict[str, bool] = {}
        self.passes = 0
        self.idle_passes = 0  # passes that found every file read to its end
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queue_stamp: tuple | None | str = "unread"
        self._profile_stamp: tuple | None | str = "unread"
        self._profile_seen = ""
        self._last_scan = 0.0
        self._run_ids: list[str] = []
        self._said: set[str] = set()
        self._meta: set[str] = set()  # runs whose stage.toml was read
        self._want_fs_events = fs_events
        self.fs_events = False  # True while watchfiles is delivering notifications
        self._rescan = False    # a new run folder appeared: scan runs/ at the next pass
        # Notifications name real paths (macOS: /private/var/... for /var/...): match both spellings.
        self._runs_dirs = {str(ws.runs_dir), str(ws.runs_dir.resolve())}
        self._profile_dirs = {str(ws.profiles_dir), str(ws.profiles_dir.resolve())}

    # -- control from the UI thread -----------------------------------------------------------

    def poke(self) -> None:
        """Poll again now (after the app itself changed a file)."""
        self._wake.set()

    def set_profile(self, name: str) -> None:
        self.profile_name = name
        self._profile_stamp = "unread"
        self.poke()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    def run(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Follow the files until stopped or `cancelled()` (a Textual worker's flag, set when the app exits)."""
        if self._want_fs_events:
            threading.Thread(target=self._follow_fs_events, name="fcwork-fs-events", daemon=True).start()
        try:
            while not self._stop.is_set() and not cancelled():
                busy = self.poll_once()
                if busy:
                    time.sleep(0.002)  # let the UI thread have the GIL between chunks
                    continue
                self._wake.wait(FS_SAFETY_POLL_S if self.fs_events else self.poll_s)
                self._wake.clear()
        finally:
            self._stop.set()  # ends the notification thread too

    def _follow_fs_events(self) -> None:
        """Wake the pass loop when a followed file changes; on any failure leave it to polling."""
        try:
            import watchfiles
        except ImportError:
            return
        try:
            for changes in watchfiles.watch(
                self.ws.root, watch_filter=self._followed, stop_event=self._stop, step=10, debounce=100,
                rust_timeout=500, yield_on_timeout=True, raise_interrupt=False,
            ):
                self.fs_events = True  # the first (possibly empty) batch says notifications flow
                if any(os.path.dirname(p) in self._runs_dirs or p.endswith(STAGE_FILE) for _, p in changes):
                    self._rescan = True
                if changes:
                    self._wake.set()
        except Exception:  # noqa: BLE001 - e.g. out of inotify watches: polling still works
            pass
        finally:
            self.fs_events = False
            self._wake.set()

    def _followed(self, change, path: str) -> bool:
        """The changes that matter to the app: the queue, profiles, and each run's folder and files."""
        name, parent = os.path.basename(path), os.path.dirname(path)
        if name in FOLLOWED or parent in self._runs_dirs:
            return True
        return parent in self._profile_dirs and name.endswith(".toml")

    def poll_once(self) -> bool:
        """One pass over everything followed; True when some file still has unread data."""
        self._check_queue()
        self._check_profile()
        now = time.monotonic()
        if now - self._last_scan >= SCAN_RUNS_S or not self.tails or self._rescan:
            self._last_scan, self._rescan = now, False
            self._scan_runs()
        busy = False
        for run_id in self._order():
            if self._stop.is_set():
                break
            busy |= self._read_run(run_id)
        self.passes += 1
        if not busy:
            self.idle_passes += 1
        return busy

    def _order(self) -> list[str]:
        first = set(self.focus) | set(self.store.running())
        rest = sorted(self.tails, reverse=True)
        return [r for r in rest if r in first] + [r for r in rest if r not in first]

    def _say(self, error: str) -> None:
        if error not in self._said:
            self._said.add(error)
            self.post(WatchFailed(error))

    def _check_queue(self) -> None:
        stamp = file_stamp(self.ws.queue_path)
        if stamp == self._queue_stamp:
            return
        self._queue_stamp = stamp
        if stamp is None:
            self.post(QueueChanged([]))
            return
        from engine.jobs.queue import StageQueue

        try:
            self.post(QueueChanged(StageQueue(self.ws).read()))
        except FcError as exc:
            self.post(QueueChanged(None, str(exc)))

    def _check_profile(self) -> None:
        name = self.profile_name
        path = self.ws.profile_path(name)
        stamp = file_stamp(path)
        if stamp == self._profile_stamp and name == self._profile_seen:
            return
        self._profile_stamp, self._profile_seen = stamp, name
        try:
            self.post(ProfileChanged(name, self.ws.load_profile(name)))
        except FcError as exc:
            self.post(ProfileChanged(name, None, str(exc)))

    def _scan_runs(self) -> None:
        try:
            found = [run.id for run in reversed(RunDir.all(self.ws))]
        except OSError as exc:
            self._say(f"{self.ws.runs_dir}: cannot list runs ({exc.strerror})")
            return
        for run_id in found:
            if run_id not in self.tails:
                self.tails[run_id] = EventTail(RunDir(self.ws.runs_dir / run_id).events_file)
                self.caught_up[run_id] = False
            if run_id not in self._meta:
                self._read_stage(run_id)
        self._check_trainers()
        if found != self._run_ids:
            self._run_ids = found
            self.post(RunsChanged(list(found)))

    def _check_trainers(self) -> None:
        """A run whose events say it trains, read to their end, while no trainer holds its lock
        ended without a final status: show it as crashed (stopped, if it was stopping)."""
        with self.store.lock:
            live = [r for r, h in self.store.runs.items() if h.state in RunState.LIVE and self.caught_up.get(r)]
        for run_id in live:
            if not RunDir(self.ws.runs_dir / run_id).trainer_gone():
                continue
            with self.store.lock:
                self.store.runs[run_id].trainer_gone()
                self.store.version += 1

    def _read_stage(self, run_id: str) -> None:
        """Fill a run's metadata (profile, stage, max steps, starting mix) from its frozen stage."""
        run = RunDir(self.ws.runs_dir / run_id)
        if not run.stage_file.exists():
            return  # not written yet: the next scan tries again
        self._meta.add(run_id)
        try:
            meta = run.meta()  # read outside the store's lock: the panes draw under it
        except FcError as exc:
            self._say(str(exc))
            return
        with self.store.lock:
            self.store.history(run_id).set_meta(meta)

    def _read_run(self, run_id: str) -> bool:
        tail = self.tails[run_id]
        try:
            data, bad, reset = tail.read_chunk()
        except OSError as exc:
            self._say(f"{tail.path}: cannot read ({exc.strerror})")
            return False
        replay = not self.caught_up[run_id]
        if data or bad or reset:
            if reset:
                self._read_stage(run_id)
            notable = self.store.ingest_lines(run_id, data, reset=reset, bad=bad)
            if notable:
                self.post(RunNotices(run_id, notable, replay))
        if tail.at_end:
            self.caught_up[run_id] = True
            return False
        return True
