"""The one fold of a run's events into its state: what the supervisor judges, the CLI prints and
the TUI draws.

`RunHistory` keeps the latest state, step, status message and step event, plus bounded series
(`MAX_POINTS` points each, thinned rather than cut, so a long run keeps its whole span), the mix
history, evals, errors and control acknowledgements. `RunStore` holds the histories of many runs
behind one lock for a reader on another thread (engine.jobs.rundir.RunFollower folds one run as it grows).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from engine.jobs.protocol import Event, MixPolicy, RunState


MAX_POINTS = 2048          # points a series keeps (older ones thinned, never dropped wholesale)
MAX_EVALS = 512
MAX_ERRORS = 64
MAX_MIXES = 512
MAX_ACKS = 256
NOTABLE = (Event.STATUS, Event.MIX, Event.ERROR, Event.CHECKPOINT, Event.EVAL, Event.ANSWER, Event.SUGGESTION)  # besides redraws
# How EventWriter (compact) and json.dumps (default separators) begin a step event's line.
STEP_PREFIXES = (b'{"type":"step"', b'{"type": "step"')
RATE_WINDOW = 64  # step events the ETA's rate is measured over
SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s", "step_time", "mem_bytes", "mfu")
META_FIELDS = ("profile", "stage", "created", "max_steps", "tokens_per_step", "start_mix")


@dataclass(frozen=True)
class RunMeta:
    """What a listing needs from stage.toml, read leniently (a missing field is empty, not an error)."""

    run_id: str
    profile: str = ""
    stage: str = ""
    created: str = ""
    max_steps: int = 0
    tokens_per_step: int = 0  # seq_len x micro_batch x grad_accum x devices x nodes of the frozen stage
    mix: dict[str, float] = field(default_factory=dict)  # the starting mix as written
    devices: int = 1  # trainer processes per node (torchrun's --nproc-per-node when above 1)
    nodes: int = 1

    @property
    def domains(self) -> list[str]:
        return list(self.mix)


class Series:
    """(step, value) points in a bounded deque; `halve()` thins it to every other point, which the
    owner does when it is full, so a long run keeps its whole span at a coarser resolution."""

    __slots__ = ("xs", "ys", "last", "last_x")

    def __init__(self, maxlen: int = MAX_POINTS) -> None:
        self.xs: deque[float] = deque(maxlen=maxlen)
        self.ys: deque[float] = deque(maxlen=maxlen)
        self.last: float | None = None
        self.last_x: float | None = None

    def append(self, x: float, y: float) -> None:
        # A resumed run re-emits the steps after its checkpoint: the newer values replace the old.
        while self.xs and self.xs[-1] >= x:
            self.xs.pop()
            self.ys.pop()
        self.xs.append(x)
        self.ys.append(y)
        self.last, self.last_x = y, x

    def note(self, x: float, y: float) -> None:
        """The latest value, without keeping it as a point (thinned away)."""
        self.last, self.last_x = y, x

    def halve(self) -> None:
        maxlen = self.xs.maxlen
        self.xs = deque(list(self.xs)[::2], maxlen=maxlen)
        self.ys = deque(list(self.ys)[::2], maxlen=maxlen)

    @property
    def full(self) -> bool:
        return len(self.xs) >= (self.xs.maxlen or MAX_POINTS)

    def points(self) -> tuple[list[float], list[float]]:
        """The kept points plus the latest one (which thinning may have skipped)."""
        xs, ys = list(self.xs), list(self.ys)
        if self.last_x is not None and (not xs or xs[-1] < self.last_x):
            xs.append(self.last_x)
            ys.append(self.last)
        return xs, ys

    def __len__(self) -> int:
        return len(self.xs)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class RunHistory:
    """Everything the panes show about one run, folded from its events."""

    run_id: str
    profile: str = ""
    stage: str = ""
    created: str = ""
    max_steps: int = 0
    tokens_per_step: int = 0
    start_mix: dict[str, float] = field(default_factory=dict)
    state: str = ""
    step: int = 0
    device: str = ""
    pid: int = 0
    message: str = ""
    last: dict[str, Any] = field(default_factory=dict)      # the latest step event
    series: dict[str, Series] = field(default_factory=dict)  # "loss", "loss/<domain>", "eval", "eval/<domain>", SCALARS
    mixes: deque = field(default_factory=lambda: deque(maxlen=MAX_MIXES))   # (step, mix, request id, "auto" or None)
    suggestion: dict[str, Any] | None = None  # the latest `suggestion` event (the policy's proposed mix)
    evals: deque = field(default_factory=lambda: deque(maxlen=MAX_EVALS))
    errors: deque = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))
    acks: "OrderedDict[int, dict]" = field(default_factory=OrderedDict)    # control request_id -> its answer event
    recent: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))  # (time, step) of recent step events
    step_stride: int = 1   # every step_stride-th step event is kept as a point (doubles as series fill)
    steps_seen: int = 0
    checkpoints: int = 0
    events: int = 0
    bad_lines: int = 0
    version: int = 0

    def set_meta(self, meta: RunMeta) -> None:
        """Profile, stage, creation time, length, tokens per step and starting mix of the run."""
        self.profile, self.stage, self.created = meta.profile, meta.stage, meta.created
        self.max_steps = self.max_steps or meta.max_steps
        self.tokens_per_step, self.start_mix = meta.tokens_per_step, dict(meta.mix)

    def trainer_gone(self) -> None:
        """No trainer holds the run's lock though its events say one trains: it ended without a word,
        so it reads as crashed (stopped, when it was stopping), never as running."""
        if self.state in RunState.LIVE:
            self.state = RunState.STOPPED if self.state == RunState.STOPPING else RunState.CRASHED
            self.message = self.message or "the trainer ended without a final status"
            self.version += 1

    @property
    def status(self) -> str:
        """The state, `created` before the run's first event."""
        return self.state or RunState.CREATED

    @property
    def loss(self) -> float | None:
        """The latest step's training loss."""
        return _number(self.last.get("loss"))

    @property
    def tokens_per_s(self) -> float | None:
        return _number(self.last.get("tokens_per_s"))

    def _series(self, key: str) -> Series:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = Series()
        return s

    def take_step(self) -> bool:
        """Count one step event; True when it is kept as a point (the others only update `last`)."""
        keep = self.steps_seen % self.step_stride == 0
        self.steps_seen += 1
        return keep

    def _add(self, key: str, step: int, value: float, keep: bool) -> None:
        s = self._series(key)
        s.append(step, value) if keep else s.note(step, value)

    def _note_mix(self, step: int, mix: Any, request_id: int | str | None) -> None:
        if not isinstance(mix, dict) or not mix:
            return
        weights = {str(d): float(w) for d, w in mix.items() if _number(w) is not None}
        if self.mixes and self.mixes[-1][1] == weights:
            if request_id is not None and self.mixes[-1][2] is None:
                self.mixes[-1] = (self.mixes[-1][0], weights, request_id)
            return
        while self.mixes and self.mixes[-1][0] > step:  # replayed after a resume
            self.mixes.pop()
        self.mixes.append((step, weights, request_id))

    def ingest(self, ev: dict[str, Any], keep: bool | None = None) -> None:
        """Fold one event in; unknown types and fields are ignored, never fatal. For a step event,
        `keep` says whether it becomes a plotted point (None: decide by the stride here)."""
        self.events += 1
        kind = ev.get("type")
        step = ev.get("step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else None
        if kind == Event.STEP and step is not None:
            keep = self.take_step() if keep is None else keep
            self.step = step
            self.last = ev
            t = _number(ev.get("time"))
            if t is not None:
                if self.recent and step <= self.recent[-1][1]:
                    self.recent.clear()  # replayed steps after a resume: the rate starts again
                self.recent.append((t, step))
            for key in SCALARS:
                v = _number(ev.get(key))
                if v is not None:
                    self._add(key, step, v, keep)
            for dom, v in (ev.get("domain_loss") or {}).items():
                v = _number(v)
                if v is not None:
                    self._add(f"loss/{dom}", step, v, keep)
            if keep and any(s.full for k, s in self.series.items() if not k.startswith("eval")):
                for k, s in self.series.items():
                    if not k.startswith("eval"):
                        s.halve()
                self.step_stride *= 2
            self._note_mix(step, ev.get("mix"), None)
            if self.state in ("", RunState.CREATED, RunState.STARTING):
                self.state = RunState.RUNNING
        elif kind == Event.STATUS:
            if ev.get("state") == RunState.STARTING:
                self.recent.clear()  # a new trainer process: time spent while none ran is not training
            self.state = str(ev.get("state") or self.state)
            if step is not None:
                self.step = step
            ms = ev.get("max_steps")
            if isinstance(ms, int) and ms > 0:
                self.max_steps = ms
            self.device = str(ev.get("device") or self.device)
            self.pid = ev.get("pid") if isinstance(ev.get("pid"), int) else self.pid
            self.message = str(ev.get("message") or "")
        elif kind == Event.EVAL and step is not None:
            self.evals.append(ev)
            values = {"eval": _number(ev.get("loss"))}
            for dom, v in (ev.get("domain_loss") or {}).items():
                values[f"eval/{dom}"] = _number(v)
            for key, v in values.items():
                if v is not None:
                    s = self._series(key)
                    s.append(step, v)
                    if s.full:
                        s.halve()
        elif kind == Event.MIX and step is not None:
            rid = ev.get("request_id")
            rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else None
            self._note_mix(step, ev.get("mix"), MixPolicy.AUTO if ev.get("source") == MixPolicy.AUTO else rid)
        elif kind == Event.SUGGESTION and step is not None and isinstance(ev.get("mix"), dict):
            if self.suggestion is None or step >= self.suggestion.get("step", 0):  # older: replayed after a resume
                self.suggestion = ev
        elif kind == Event.ANSWER:
            rid = ev.get("request_id")
            if isinstance(rid, int) and not isinstance(rid, bool):
                self.acks[rid] = ev
                while len(self.acks) > MAX_ACKS:
                    self.acks.popitem(last=False)
        elif kind == Event.CHECKPOINT:
            self.checkpoints += 1
        elif kind == Event.ERROR:
            self.errors.append(ev)
        self.version += 1

    def domains(self) -> list[str]:
        """Domains seen in training losses, evals or the mix, in first-seen order."""
        seen = dict.fromkeys(self.start_mix)
        for key in self.series:
            if "/" in key:
                seen.setdefault(key.split("/", 1)[1])
        for _, mix, _ in self.mixes:
            for d in mix:
                seen.setdefault(d)
        return list(seen)

    def eta_seconds(self) -> float | None:
        """Time left: the steps still to train at the wall-clock step rate of the recent step events
        (evals and checkpoints included, noise averaged out); from the latest tokens/s until there are
        two of them."""
        if not self.max_steps or self.state not in (RunState.RUNNING, RunState.STARTING):
            return None
        if len(self.recent) >= 2:
            (t0, s0), (t1, s1) = self.recent[0], self.recent[-1]
            if t1 > t0 and s1 > s0:
                return max(0, self.max_steps - self.step) * (t1 - t0) / (s1 - s0)
        tps = _number(self.last.get("tokens_per_s"))
        if not tps:
            return None
        per_step = self.tokens_per_step
        tokens, step = _number(self.last.get("tokens")), self.last.get("step")
        if not per_step and tokens and isinstance(step, int) and step > 0:
            per_step = tokens / step
        if not per_step:
            return None
        return max(0, self.max_steps - self.step) * per_step / tps


class RunStore:
    """Histories of all runs, shared by the watcher thread (writer) and the UI (readers)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, RunHistory] = {}
        self.version = 0

    def history(self, run_id: str) -> RunHistory:
        """The run's history, created empty on first use (call with the lock held)."""
        h = self.runs.get(run_id)
        if h is None:
            h = self.runs[run_id] = RunHistory(run_id)
        return h

    def ingest(self, run_id: str, events: Iterable[dict], reset: bool = False, bad: int = 0) -> list[dict]:
        """Fold parsed events into a run's history; returns the notable ones (status, mix, error, ...)."""
        return self._fold(run_id, reset, bad, lambda h: ((ev, None) for ev in events))

    def ingest_lines(self, run_id: str, data: bytes, reset: bool = False, bad: int = 0) -> list[dict]:
        """Fold raw JSON lines in, parsing only the step events that become points (and the last
        one, for the latest values): at thousands of steps a second most lines are only counted."""
        return self._fold(run_id, reset, bad, lambda h: _parse_lines(h, data))

    def _fold(self, run_id: str, reset: bool, bad: int,
              items: Callable[[RunHistory], Iterable[tuple[dict, bool | None]]]) -> list[dict]:
        """Fold (event, keep) pairs into a run's history under the lock; returns the notable events."""
        notable = []
        with self.lock:
            h = self.history(run_id)
            if reset:  # the file was replaced: start again, keeping what stage.toml said
                h = self.runs[run_id] = RunHistory(run_id, **{k: getattr(h, k) for k in META_FIELDS})
            for ev, keep in items(h):
                h.ingest(ev, keep)
                if ev.get("type") in NOTABLE:
                    notable.append(ev)
            h.bad_lines += bad
            h.version += 1
            self.version += 1
        return notable

    def run_ids(self) -> list[str]:
        """Run ids, newest first (run ids begin with their creation time)."""
        with self.lock:
            return sorted(self.runs, reverse=True)

    def running(self) -> list[str]:
        """Runs whose last status says they are starting, running or stopping, newest first."""
        with self.lock:
            return sorted((r for r, h in self.runs.items() if h.state in RunState.LIVE), reverse=True)


def _parse_lines(h: RunHistory, data: bytes) -> Iterator[tuple[dict, bool | None]]:
    """(event, keep) for each line of `data` that `h` needs parsed: a step event that is neither a
    kept point nor the last step is only counted (in `h.events`), a bad line in `h.bad_lines`."""
    lines = data.split(b"\n")
    last_step = max((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith(STEP_PREFIXES)), default=-1)
    for i, line in enumerate(lines):
        keep = None
        if line.startswith(STEP_PREFIXES):
            keep = h.take_step()
            if not keep and i != last_step:
                h.events += 1
                continue
        elif not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            h.bad_lines += 1
            continue
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
            h.bad_lines += 1
            continue
        yield ev, keep
