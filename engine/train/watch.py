"""The trainer's side of control.toml and signals: notice a new request, validate it, hand it over once.

A watchfiles thread sets a flag when control.toml changes, so the loop's per-step check is a
flag test; a cheap stat once a second covers filesystems that send no notifications.
SIGTERM and SIGINT set the stop flag, so they checkpoint and stop like `stop = true`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from engine.compat import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from engine.jobs.control import CONTROL_FILE, ControlRequest, parse_control
from engine.errors import ControlError

log = logging.getLogger("fcwork.trainer")
STAT_INTERVAL_S = 1.0
# How often watchfiles' thread wakes to check its stop event (its `step`). Measured on an H200 with
# a launch-bound tiny model: 50 ms, 500 ms and no thread at all give the same step time (+-1%).
WATCH_STEP_MS = 50


@dataclass(frozen=True)
class Rejected:
    """A control file the trainer refused, with the one-line reason (and its request id if readable)."""

    message: str
    request_id: int | None = None


class ControlWatcher:
    """Turns changes of RUN_DIR/control.toml into new ControlRequests (or Rejected), each once."""

    def __init__(self, run_dir: Path, domains: Iterable[str], last_request_id: int = 0, watch: bool = True) -> None:
        self.path = Path(run_dir) / CONTROL_FILE
        self.domains = list(domains)
        self.last_request_id = last_request_id
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signature: tuple | None = None
        self._next_stat = 0.0
        self._rejected_digest: str | None = None
        self._changed.set()  # look once at start: a request may have come while no trainer ran
        if watch:
            self._start_thread()

    def _start_thread(self) -> None:
        try:
            import watchfiles
        except ImportError:
            return
        name = self.path.name

        def run() -> None:
            try:
                for _ in watchfiles.watch(
                    self.path.parent, stop_event=self._stop, step=WATCH_STEP_MS, rust_timeout=500, yield_on_timeout=False,
                    watch_filter=lambda change, p: os.path.basename(p) == name, raise_interrupt=False, recursive=False,
                ):
                    self._changed.set()
            except Exception as exc:  # the stat fallback keeps working
                log.warning("control.toml watcher stopped (%s); checking once a second instead", exc)

        self._thread = threading.Thread(target=run, name="control-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _stat_changed(self) -> bool:
        now = time.monotonic()
        if now < self._next_stat:
            return False
        self._next_stat = now + STAT_INTERVAL_S
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        changed, self._signature = sig != self._signature, sig
        return changed

    def poll(self) -> ControlRequest | Rejected | None:
        """A new request or rejection since the last call, else None (cheap when nothing changed)."""
        if not (self._changed.is_set() or self._stat_changed()):
            return None
        self._changed.clear()
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        try:
            rid = tomllib.loads(text).get("request_id")
        except tomllib.TOMLDecodeError:
            rid = None
        if not isinstance(rid, int) or isinstance(rid, bool):
            rid = None
        if rid is not None and rid <= self.last_request_id:
            return None  # already acted on (or an older file)
        try:
            request = parse_control(text, str(self.path), self.domains)
        except ControlError as exc:
            digest = hashlib.sha256(text.encode()).hexdigest()
            if rid is None and digest == self._rejected_digest:
                return None  # the same unreadable file again: reported already
            self._rejected_digest = digest
            if rid is not None:
                self.last_request_id = rid
            return Rejected(str(exc), rid)
        self.last_request_id = request.request_id
        return request


class StopSignals:
    """SIGTERM/SIGINT set a flag the loop checks between steps (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
