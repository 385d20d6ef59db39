"""One run folder, `runs/<run-id>/`: the only module that names the files in it.

`RunDir` is what every client of a run folder holds (supervisor, trainer, CLI, TUI, eval,
export): its files, its frozen stage (the lenient `meta()` for listings, the validated `spec()`
for training), its events (read from an offset, or the last of each type), its checkpoints,
control requests to its trainer, and `summary()`, the one fold of its events into a state.
The file formats themselves are owned by events.py, control.py and runs.py (stage.toml).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from engine.atomic import read_json_object
from engine.compat import tomllib
from engine.errors import ControlError, RunError
from engine.jobs import control, events
from engine.jobs.history import RunHistory, RunMeta
from engine.jobs.locks import holder_pid
from engine.jobs.protocol import Event, RunState
from engine.jobs.spec import RunSpec, parse_run_spec

if TYPE_CHECKING:
    from engine.workspace import Workspace

STAGE_FILE = "stage.toml"
EVENTS_FILE = "events.jsonl"
REQUESTS_DIR = "requests"
TRAINER_LOG = "trainer.log"
TRAINER_LOCK = "trainer.lock"
EVALS_FILE = "evals.jsonl"
CKPT_DIR = "ckpt"
CKPT_PREFIX = "step-"
CKPT_STATE = "state.json"
EXPORTS_DIR = "exports"
RANK_FAILURE = "rank-{}.failed.json"  # why a rank other than 0 ended (rank 0 says it in the events)
FOLLOWED_FILES = frozenset({STAGE_FILE, EVENTS_FILE})  # what a watcher of runs/ reacts to


class RunDir:
    """A run folder by path; cheap to make, touches the disk only when asked."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def id(self) -> str:
        return self.path.name

    # -- its files ------------------------------------------------------------------------

    stage_file = property(lambda self: self.path / STAGE_FILE)
    events_file = property(lambda self: self.path / EVENTS_FILE)
    requests_dir = property(lambda self: self.path / REQUESTS_DIR)
    trainer_log = property(lambda self: self.path / TRAINER_LOG)
    trainer_lock = property(lambda self: self.path / TRAINER_LOCK)
    evals_file = property(lambda self: self.path / EVALS_FILE)
    ckpt_dir = property(lambda self: self.path / CKPT_DIR)
    exports_dir = property(lambda self: self.path / EXPORTS_DIR)

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"{CKPT_PREFIX}{step}"

    def exists(self) -> bool:
        """Whether this is a run folder (it has its frozen stage)."""
        return self.stage_file.is_file()

    # -- finding runs -----------------------------------------------------------------------

    @staticmethod
    def all(ws: "Workspace") -> list["RunDir"]:
        """The workspace's run folders, oldest first (run ids begin with their creation time)."""
        if not ws.runs_dir.is_dir():
            return []
        runs = [RunDir(p) for p in ws.runs_dir.iterdir() if p.is_dir() and (p / STAGE_FILE).exists()]
        return sorted(runs, key=lambda r: (r.id[:15], r.id))

    @staticmethod
    def resolve(ws: "Workspace", run: str) -> "RunDir":
        """A run by id, by a prefix that only one run id has, or by the path of its folder."""
        path = Path(run).expanduser()
        if (path / STAGE_FILE).exists() and (os.sep in run or not (ws.runs_dir / run).exists()):
            return RunDir(path)
        if (ws.runs_dir / run / STAGE_FILE).exists():
            return RunDir(ws.runs_dir / run)
        known = [r.id for r in RunDir.all(ws)]
        matches = [r for r in known if r.startswith(run)] if run and os.sep not in run else []
        if len(matches) == 1:
            return RunDir(ws.runs_dir / matches[0])
        if len(matches) > 1:
            raise RunError(f"{ws.runs_dir}: {run!r} names {len(matches)} runs ({', '.join(matches[-5:])}): give more of the id")
        listed = ", ".join(known[-5:]) or "none"
        raise RunError(f"{ws.runs_dir}: no run {run!r} (latest runs: {listed})")

    # -- the frozen stage -----------------------------------------------------------------

    def read_stage(self) -> dict[str, Any]:
        """stage.toml as data; a missing or unreadable file is a one-line RunError."""
        path = self.stage_file
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{path}: no such file (not a run folder)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}: cannot read ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise RunError(f"{path}: invalid TOML: {exc}") from None

    def meta(self) -> RunMeta:
        """Identity, length, tokens per step and starting mix of the run, leniently read."""
        doc = self.read_stage()
        run, stage, mix = doc.get("run", {}), doc.get("stage", {}), doc.get("mix", {})
        run = run if isinstance(run, dict) else {}
        stage = stage if isinstance(stage, dict) else {}

        def number(key: str, default: int = 0) -> int:
            v = stage.get(key, default)
            return v if isinstance(v, int) and not isinstance(v, bool) else 0

        devices, nodes = max(number("devices", 1), 1), max(number("nodes", 1), 1)

        return RunMeta(
            run_id=str(run.get("id") or self.id), profile=str(run.get("profile", "")),
            stage=str(run.get("stage") or stage.get("name", "")), created=str(run.get("created", "")),
            max_steps=number("max_steps"),
            tokens_per_step=number("seq_len") * number("micro_batch") * number("grad_accum", 1) * devices * nodes,
            mix={str(d): float(w) for d, w in (mix.items() if isinstance(mix, dict) else ())
                 if isinstance(w, (int, float)) and not isinstance(w, bool)},
            devices=devices, nodes=nodes,
        )

    def spec(self) -> RunSpec:
        """The validated frozen stage: what the trainer trains and on which data."""
        return parse_run_spec(self.read_stage(), str(self.stage_file), self.path)

    # -- events ---------------------------------------------------------------------------

    def read_events(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Events appended after byte `offset`, and the offset to go on from."""
        return events.read_events(self.events_file, offset)

    def events_size(self) -> int:
        """The byte offset of the end of events.jsonl now (0 before the trainer wrote any)."""
        try:
            return self.events_file.stat().st_size
        except FileNotFoundError:
            return 0

    def last_events(self, want: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The last event of each wanted type, in the order written (read backwards: cheap on a long run)."""
        return events.tail_events(self.events_file, set(want))

    def current_mix(self) -> dict[str, float]:
        """The mix in force now: that of the latest `mix` or `step` event (whichever is later),
        else the starting mix of stage.toml."""
        last = self.last_events((Event.MIX, Event.STEP))
        found = sorted((ev for ev in last.values() if isinstance(ev.get("mix"), dict) and ev["mix"]),
                       key=lambda ev: (ev.get("step") if isinstance(ev.get("step"), int) else -1,
                                       ev.get("type") == Event.MIX))
        if found:
            return {str(d): float(w) for d, w in found[-1]["mix"].items()
                    if isinstance(w, (int, float)) and not isinstance(w, bool)}
        return self.meta().mix

    def writer(self) -> events.EventWriter:
        return events.EventWriter(self.events_file)

    def new_history(self) -> RunHistory:
        """An empty fold of this run with its metadata from stage.toml (left empty when unreadable)."""
        h = RunHistory(self.id)
        with contextlib.suppress(RunError):
            h.set_meta(self.meta())
        return h

    def history(self) -> RunHistory:
        """The whole run folded from all its events (what the TUI and `runs show` display)."""
        h = self.new_history()
        for ev in self.read_events()[0]:
            h.ingest(ev)
        return h

    def summary(self) -> "RunHistory":
        """The run's state, step, loss and message from its last status and step events only:
        the same fold as `history()`, fed the two events that decide those fields. A run whose
        events say it trains while no trainer holds its lock ended without a word: it reads as
        crashed (or stopped, when it was stopping), never as running."""
        h = self.new_history()
        for ev in self.last_events((Event.STATUS, Event.STEP)).values():  # in the order written
            h.ingest(ev)
        if h.state in RunState.LIVE and self.trainer_gone():
            h.trainer_gone()
        return h

    def state(self) -> str:
        """The state of the run's last status event (`created` when it has none)."""
        return self.summary().state

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as (step, folder), oldest first (temp folders are not listed)."""
        if not self.ckpt_dir.is_dir():
            return []
        found = []
        for p in self.ckpt_dir.iterdir():
            n = p.name[len(CKPT_PREFIX):]
            if p.name.startswith(CKPT_PREFIX) and n.isdigit() and (p / CKPT_STATE).exists():
                found.append((int(n), p))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    # -- exports ------------------------------------------------------------------------------

    def checkpoint_state(self, path: Path | None = None) -> dict[str, Any]:
        """state.json of a checkpoint folder (the latest when None); {} when there is none or it is unreadable."""
        path = path or self.latest_checkpoint()
        return read_json_object(path / CKPT_STATE) if path is not None else {}

    def exports(self) -> list[tuple[str, int]]:
        """Finished exports as (folder name, bytes), by name (temp folders of an export under way are not listed)."""
        if not self.exports_dir.is_dir():
            return []
        return [(p.name, sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
                for p in sorted(self.exports_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]

    # -- the trainer --------------------------------------------------------------------------

    def trainer_pid(self) -> int | None:
        """The pid of the trainer running in this run now, or None."""
        return holder_pid(self.trainer_lock)

    def trainer_gone(self) -> bool:
        """True when a trainer ran here (its lock file exists) and none holds the lock now."""
        return self.trainer_lock.exists() and self.trainer_pid() is None

    def rank_failure_path(self, rank: int) -> Path:
        return self.path / RANK_FAILURE.format(rank)

    def record_rank_failure(self, rank: int, message: str, exit_code: int) -> None:
        """A rank other than 0 writes no events: it leaves why it ended here for the supervisor."""
        from engine.atomic import atomic_write_text

        atomic_write_text(self.rank_failure_path(rank), json.dumps({"rank": rank, "message": message,
                                                                   "exit_code": exit_code}) + "\n")

    def rank_failures(self) -> list[dict[str, Any]]:
        """What the ranks other than 0 of the last launch recorded as they ended, by rank."""
        out = []
        for path in sorted(self.path.glob(RANK_FAILURE.format("*"))):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return out

    def clear_rank_failures(self) -> None:
        for path in self.path.glob(RANK_FAILURE.format("*")):
            path.unlink(missing_ok=True)

    def send_request(self, mix: dict[str, float] | None = None, stop: bool = False) -> int:
        """Ask the run's trainer for a new mix and/or a stop; returns the request's id, which its
        `answer` event will carry."""
        if not self.exists():
            raise ControlError(f"{self.path}: no such run folder")
        last = self.last_events((Event.ANSWER,)).get(Event.ANSWER, {}).get("request_id")
        answered = last if isinstance(last, int) and not isinstance(last, bool) else 0
        return control.send_request(self.requests_dir, mix=mix, stop=stop, answered=answered)

    def read_request(self, request_id: int, domains: Iterable[str] | None = None) -> control.ControlRequest:
        return control.read_request(self.requests_dir, request_id, domains)


class RunFollower:
    """One run folded as its events are appended: the CLI's live view, the supervisor's verdict."""

    def __init__(self, run: RunDir, offset: int = 0) -> None:
        self.run = run
        self.offset = offset
        self.history = run.new_history()

    def poll(self) -> list[dict]:
        """Fold what was appended since the last poll; returns the new events."""
        events, self.offset = self.run.read_events(self.offset)
        for ev in events:
            self.history.ingest(ev)
        return events
