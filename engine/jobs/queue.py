"""The stage queue: `queue.toml` entries and the operations on them, serialised by a file lock.

Every edit is a read-modify-write inside an flock on `<workspace>/queue.lock`, so two TUIs,
the CLI and the supervisor never lose each other's changes; the file itself is replaced
atomically, so readers without the lock always see a whole version.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from engine.atomic import atomic_write_text
from engine.compat import tomllib
from engine.errors import FcError, QueueError
from engine.jobs import procs
from engine.jobs.locks import locked
from engine.jobs.protocol import EntryState
from engine.jobs.rundir import RunDir
from engine.jobs.runs import check_start
from engine.workspace import Workspace

LOCK_NAME = "queue.lock"


class MissingEntry(QueueError):
    """The queue is readable and has no entry with that id (removed by hand, say)."""


@dataclass
class QueueEntry:
    """One stage waiting, running or finished in the queue.

    `pid` (the trainer's pid while running) and `cancel_requested` (a cancel asked while it
    ran) extend the fields of docs/formats.md; both are optional on disk, as is `init_from` (a
    stage of the profile or a run id the entry starts from instead of its stage's init_from).
    """

    id: int
    profile: str
    stage: str
    state: str = EntryState.QUEUED
    run_id: str = ""
    restarts: int = 0
    message: str = ""
    added: float = 0.0
    pid: int = 0
    cancel_requested: bool = False
    init_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS: dict[str, tuple[Any, str]] = {
    "id": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "profile": (lambda v: isinstance(v, str) and v != "", "a profile name"),
    "stage": (lambda v: isinstance(v, str) and v != "", "a stage name"),
    "state": (lambda v: v in EntryState.ALL, "one of " + ", ".join(EntryState.ALL)),
    "run_id": (lambda v: isinstance(v, str) and "/" not in v, "a run id (a folder name under runs/) or \"\""),
    "restarts": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "message": (lambda v: isinstance(v, str), "a string"),
    "added": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              "a time in unix seconds"),
    "pid": (lambda v: _is_int(v) and v >= 0, "a process id or 0"),
    "cancel_requested": (lambda v: isinstance(v, bool), "true or false"),
    "init_from": (lambda v: isinstance(v, str) and "/" not in v, "a stage name, a run id or \"\""),
}
_REQUIRED = ("id", "profile", "stage", "state")


def parse_queue(data: dict[str, Any], origin: str) -> list[QueueEntry]:
    """Validate parsed queue.toml data; every error names the file and the key."""
    for key in data:
        if key != "entries":
            raise QueueError(f"{origin}: {key}: unknown key (expected only [[entries]])")
    raw = data.get("entries", [])
    if not isinstance(raw, list):
        raise QueueError(f"{origin}: entries: expected an array of tables ([[entries]]), got {type(raw).__name__}")
    entries: list[QueueEntry] = []
    seen: set[int] = set()
    names = [f.name for f in fields(QueueEntry)]
    for i, table in enumerate(raw):
        where = f"{origin}: entries[{i}]"
        if not isinstance(table, dict):
            raise QueueError(f"{where}: expected a table, got {type(table).__name__}")
        for key in table:
            if key not in _CHECKS:
                raise QueueError(f"{where}.{key}: unknown key (expected one of {', '.join(names)})")
        for key in _REQUIRED:
            if key not in table:
                raise QueueError(f"{where}.{key}: missing (expected {_CHECKS[key][1]})")
        for key, value in table.items():
            check, expect = _CHECKS[key]
            if not check(value):
                raise QueueError(f"{where}.{key}: expected {expect}, got {value!r}")
        if table["id"] in seen:
            raise QueueError(f"{where}.id: expected a unique id, got duplicate {table['id']}")
        seen.add(table["id"])
        values = dict(table)
        if "added" in values:
            values["added"] = float(values["added"])
        entries.append(QueueEntry(**values))
    return entries


def dumps_queue(entries: list[QueueEntry]) -> str:
    """The queue as TOML text."""
    header = "# The stage queue of this workspace; edited by fcwork (queue.lock serialises writers).\n"
    return header + tomli_w.dumps({"entries": [e.to_dict() for e in entries]})


class StageQueue:
    """The queue of one workspace; every method takes the lock and re-reads the file."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.path: Path = ws.queue_path
        self.lock_path: Path = ws.root / LOCK_NAME

    # -- reading and the locked edit ------------------------------------------------------

    def read(self) -> list[QueueEntry]:
        """The entries as on disk now (no lock needed: writes are atomic renames)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except UnicodeDecodeError as exc:
            raise QueueError(f"{self.path}: expected UTF-8 text, got an undecodable byte at offset {exc.start}") from None
        except OSError as exc:
            raise QueueError(f"{self.path}: cannot read ({exc.strerror})") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise QueueError(f"{self.path}: invalid TOML: {exc}") from None
        return parse_queue(data, str(self.path))

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold queue.lock (blocking) for a read-modify-write."""
        return locked(self.lock_path)

    @contextlib.contextmanager
    def edit(self) -> Iterator[list[QueueEntry]]:
        """Yield the entries under the lock; the list as left by the caller is written back."""
        with self.locked():
            entries = self.read()
            before = [e.to_dict() for e in entries]
            yield entries
            if [e.to_dict() for e in entries] != before:
                atomic_write_text(self.path, dumps_queue(entries))

    def get(self, entry_id: int) -> QueueEntry:
        return _find(self.read(), entry_id, self.path)

    # -- user operations -----------------------------------------------------------------

    def add(self, profile: str, stage: str, init_from: str = "") -> QueueEntry:
        """Queue `stage` of `profile` (both must exist in the workspace), from `init_from` when given."""
        return self.add_many(profile, [stage], init_from)[0]

    def add_many(self, profile: str, stages: list[str], init_from: str = "") -> list[QueueEntry]:
        """Queue several stages of one profile, in the order given, in one locked edit; `init_from`
        (a stage of the profile, or a run id or prefix) overrides where each starts."""
        prof = self.ws.load_profile(profile)
        starts = {}
        for name in stages:
            prof.stage(name)  # raises a ProfileError naming the known stages
            starts[name] = check_start(self.ws, prof, name, init_from) if init_from else ""
        key = profile_key(self.ws, profile)
        added = []
        with self.edit() as entries:
            next_id = max((e.id for e in entries), default=0) + 1
            for name in stages:
                entry = QueueEntry(id=next_id, profile=key, stage=name, added=round(time.time(), 3),
                                   init_from=starts[name])
                entries.append(entry)
                added.append(entry)
                next_id += 1
        return added

    def remove(self, entry_id: int) -> QueueEntry:
        """Drop an entry (its run folder stays); a running entry must be cancelled first."""
        with self.edit() as entries:
            entry = _find(entries, entry_id, self.path)
            if entry.state == EntryState.RUNNING:
                raise QueueError(f"{self.path}: entry {entry_id} is running; cancel it first (fcwork queue cancel {entry_id})")
            entries.remove(entry)
        return entry

    def move(self, entry_id: int, where: str | int) -> int:
        """Move an entry `up`, `down` or to a 0-based index; returns its new index."""
        with self.edit() as entries:
            entry = _find(entries, entry_id, self.path)
            old = entries.index(entry)
            if where == "up":
                new = max(old - 1, 0)
            elif where == "down":
                new = min(old + 1, len(entries) - 1)
            elif isinstance(where, int) and not isinstance(where, bool):
                if not 0 <= where < len(entries):
                    raise QueueError(f"{self.path}: move: expected a position from 1 to {len(entries)}, got {where + 1}")
                new = where
            else:
                raise QueueError(f"{self.path}: move: expected up, down or a position, got {where!r}")
            entries.pop(old)
            entries.insert(new, entry)
        return new

    def cancel(self, entry_id: int) -> QueueEntry:
        """A queued entry is cancelled at once; a running one is asked to stop (checkpoint first)
        and marked cancelled by the supervisor once its trainer exits."""
        with self.edit() as entries:
            entry = _find(entries, entry_id, self.path)
            if entry.state == EntryState.QUEUED:
                entry.state, entry.message = EntryState.CANCELLED, "cancelled before it started"
            elif entry.state == EntryState.RUNNING:
                run = RunDir(self.ws.runs_dir / entry.run_id) if entry.run_id else None
                alive = run is not None and run.trainer_pid() is not None
                if not alive and procs.supervisor_pid(self.ws) is None:
                    # Nobody is left to act on a stop: the entry was orphaned by a dead supervisor.
                    entry.state, entry.pid, entry.cancel_requested = EntryState.CANCELLED, 0, False
                    entry.message = "cancelled (its supervisor and trainer were gone)"
                else:
                    entry.cancel_requested = True
                    entry.message = "stopping: checkpoint, then cancel"
                    if run is not None and run.exists():
                        run.send_request(stop=True)
            else:
                raise QueueError(f"{self.path}: entry {entry_id} is {entry.state}; only a queued or running entry can be cancelled")
        return entry

    def resume(self, entry_id: int) -> QueueEntry:
        """Put a cancelled or failed entry back in the queue; it keeps its run and resumes from
        that run's last checkpoint."""
        with self.edit() as entries:
            entry = _find(entries, entry_id, self.path)
            if entry.state not in EntryState.RESUMABLE:
                raise QueueError(f"{self.path}: entry {entry_id} is {entry.state}; only a cancelled or failed entry can be resumed")
            entry.state, entry.restarts, entry.pid, entry.cancel_requested = EntryState.QUEUED, 0, 0, False
            entry.message = _resume_message(self.ws, entry)
        return entry

    def start(self) -> int:
        """Make sure the workspace's supervisor runs; returns its pid."""
        return procs.ensure_supervisor(self.ws)

    # -- supervisor side -----------------------------------------------------------------

    def update(self, entry_id: int, **changes: Any) -> QueueEntry:
        """Set fields of one entry (used by the supervisor)."""
        with self.edit() as entries:
            entry = _find(entries, entry_id, self.path)
            for key, value in changes.items():
                if key not in _CHECKS or key == "id":
                    raise QueueError(f"{self.path}: entries: cannot set {key!r}")
                setattr(entry, key, value)
        return entry

    def claim_next(self) -> tuple[QueueEntry, bool] | None:
        """The entry the supervisor should work on, and whether it was orphaned: one left
        running by a supervisor that died, else the first queued one that is not waiting for
        the stage it starts from (see `waiting_for`), now marked running."""
        with self.edit() as entries:
            for entry in entries:
                if entry.state == EntryState.RUNNING:
                    return entry, True
            for entry in entries:
                if entry.state != EntryState.QUEUED:
                    continue
                dep = self.waiting_for(entry, entries)
                if dep is not None:
                    entry.message = waiting_message(dep)
                    continue
                entry.state, entry.pid, entry.message = EntryState.RUNNING, 0, "starting"
                return entry, False
        return None

    def has_work(self, entries: list[QueueEntry] | None = None) -> bool:
        """Whether the supervisor has something to run: an entry running, or queued and not waiting."""
        entries = self.read() if entries is None else entries
        return any(e.state == EntryState.RUNNING or (e.state == EntryState.QUEUED and self.waiting_for(e, entries) is None)
                   for e in entries)

    def orphans(self, entries: list[QueueEntry] | None = None) -> list[QueueEntry]:
        """Entries marked running while no supervisor watches them (it was killed, or the machine
        restarted): nothing records their end and the entries after them wait, until one starts."""
        entries = self.read() if entries is None else entries
        running = [e for e in entries if e.state == EntryState.RUNNING]
        return running if running and procs.supervisor_pid(self.ws) is None else []

    def waiting_for(self, entry: QueueEntry, entries: list[QueueEntry]) -> QueueEntry | None:
        """The entry of the stage that `entry`'s stage starts from (the entry's init_from, else the
        stage's; same profile) that it must wait for: one queued or running, or the latest such entry when it was cancelled or
        failed (its dependant should not start from an older run, nor fail for want of one).
        None when it may start; an entry whose run exists already never waits."""
        if entry.run_id:
            return None
        try:
            prof = self.ws.load_profile(entry.profile)
            init_from = entry.init_from or prof.stage(entry.stage).init_from
        except FcError:
            return None  # the supervisor fails the entry with that error when it claims it
        if init_from not in [s.name for s in prof.stages]:
            return None  # no init_from, or a run that exists already
        deps = [e for e in entries if e.id != entry.id and e.profile == entry.profile and e.stage == init_from]
        active = [e for e in deps if e.state in EntryState.ACTIVE]
        if active:
            return active[0]
        latest = max(deps, key=lambda e: e.id, default=None)
        return latest if latest is not None and latest.state in EntryState.RESUMABLE else None


def waiting_message(dep: QueueEntry) -> str:
    """What a held entry says about the entry it waits for."""
    if dep.state in EntryState.RESUMABLE:
        return f"waiting for {dep.stage} (#{dep.id}, {dep.state}): resume #{dep.id}, or remove this entry"
    return f"waiting for {dep.stage} (#{dep.id}) to finish"


def profile_key(ws: Workspace, profile: str) -> str:
    """How an entry names its profile: the bare name for profiles/<name>.toml, else the path."""
    path = ws.profile_path(profile)
    return path.stem if path.parent in (ws.profiles_dir, ws.profiles_dir.resolve()) else str(path)


def _find(entries: list[QueueEntry], entry_id: int, path: Path) -> QueueEntry:
    for entry in entries:
        if entry.id == entry_id:
            return entry
    known = ", ".join(str(e.id) for e in entries) or "none"
    raise MissingEntry(f"{path}: no entry with id {entry_id} (ids: {known})")


def _resume_message(ws: Workspace, entry: QueueEntry) -> str:
    if not entry.run_id:
        return "queued again"
    ckpt = RunDir(ws.runs_dir / entry.run_id).latest_checkpoint()
    return f"resumes from {ckpt.name}" if ckpt else "restarts its run from step 0"
