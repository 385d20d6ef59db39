"""events.jsonl: the trainer's append-only log of status, step, eval, mix, checkpoint and error events.

One JSON object a line, each with `type` and `time` (unix seconds); docs/formats.md lists the
fields. The writer flushes every line (a reader tailing the file sees it at once) and fsyncs only
the rare events that must survive a power cut (status, checkpoint, error, mix, answer), so logging a step costs
one small write. The readers are incremental (byte offsets) and skip a torn last line:
`read_events` from an offset, `tail_events` the last of each type, `EventTail` in bounded chunks
for a follower that must not stall on a huge backlog.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from engine.jobs.protocol import Event

CHUNK_BYTES = 1 << 20  # most bytes one EventTail read takes
# Events whose loss would mislead a restart or the supervisor: synced to disk, not just flushed.
# Mixes and answers too: a resume replays them, and a sender waits for its answer.
DURABLE_TYPES = frozenset({Event.STATUS, Event.CHECKPOINT, Event.ERROR, Event.MIX, Event.ANSWER})


class EventWriter:
    """Appends events to an events.jsonl file, one flushed JSON line each."""

    def __init__(self, path: str | os.PathLike, durable: frozenset[str] | set[str] = DURABLE_TYPES) -> None:
        self.path = Path(path)
        self.durable = frozenset(durable)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = open(self.path, "a", encoding="utf-8")
        # A writer killed mid-line leaves a torn line; end it so our first event starts a line of its own.
        if self._fh.tell() > 0 and not _ends_with_newline(self.path):
            self._fh.write("\n")
            self._fh.flush()

    def write(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append one event (`type` and `time` first, then `fields`) and return it."""
        if self._fh is None:
            raise ValueError(f"{self.path}: event writer is closed")
        event = {"type": type, "time": round(time.time(), 3), **fields}
        self._fh.write(json.dumps(event, separators=(",", ":"), allow_nan=False, default=_jsonable) + "\n")
        self._fh.flush()
        if type in self.durable:
            os.fsync(self._fh.fileno())
        return event

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):  # a full disk: what could not be flushed is lost; the caller said why
                fh.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    """Numbers from numpy/torch scalars and paths, for json.dumps."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"event field of type {type(value).__name__} is not JSON-serialisable")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events from byte `offset` to the last complete line, and the offset to continue from.

    A missing file reads as no events. A partial last line (a write in progress) is left for
    the next call; a complete line that is not a JSON object (torn by a kill) is skipped.
    A file shorter than `offset` (replaced) is read again from the start.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if offset > size:
                offset = 0
            fh.seek(offset)
            data = fh.read(size - offset)
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    return parse_lines(data[:end])[0], offset + end


def _parse_line(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return event if isinstance(event, dict) and isinstance(event.get("type"), str) else None


def tail_events(path: str | os.PathLike, want: set[str], block: int = 1 << 16) -> dict[str, dict[str, Any]]:
    """The last event of each type in `want`, in the order the file has them, reading it backwards
    in blocks: cheap on a long run's events.jsonl, it stops as soon as every wanted type is found."""
    path = Path(path)
    found: dict[str, dict[str, Any]] = {}
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return found
    with fh:
        pos = os.fstat(fh.fileno()).st_size
        carry = b""
        while pos > 0 and len(found) < len(want):
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + carry
            lines = chunk.split(b"\n")
            carry = lines.pop(0) if pos > 0 else b""  # maybe the tail of a line that starts earlier
            for line in reversed(lines):
                event = _parse_line(line)
                if event is not None and event["type"] in want and event["type"] not in found:
                    found[event["type"]] = event
    return dict(reversed(found.items()))


def parse_lines(data: bytes) -> tuple[list[dict], int]:
    """Events from complete JSON lines; returns (events, lines that were not an event object)."""
    events, bad = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        event = _parse_line(line)
        if event is None:
            bad += 1
        else:
            events.append(event)
    return events, bad


class EventTail:
    """Incremental reader of one events.jsonl: whole lines only, a bounded slice per call."""

    def __init__(self, path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.offset = 0
        self.size = 0
        self._ino: int | None = None

    def read_chunk(self) -> tuple[bytes, int, bool]:
        """(complete lines read, lines skipped as too long, reset) where reset means the file was
        replaced or truncated and the data starts again from its beginning."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return b"", 0, False
        reset = False
        if (self._ino is not None and st.st_ino != self._ino) or st.st_size < self.offset:
            self.offset, reset = 0, True
        self._ino, self.size = st.st_ino, st.st_size
        if st.st_size <= self.offset:
            return b"", 0, reset
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(self.chunk_bytes)
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) < self.chunk_bytes:
                return b"", 0, reset  # a line still being written
            # One line longer than a whole chunk: skip past it rather than stall.
            self.offset += len(data)
            return b"", 1, reset
        self.offset += cut + 1
        return data[:cut], 0, reset

    def read_events(self) -> tuple[list[dict], int, bool]:
        """Like `read_chunk`, parsed: (events, bad lines, reset)."""
        data, skipped, reset = self.read_chunk()
        events, bad = parse_lines(data)
        return events, bad + skipped, reset

    @property
    def at_end(self) -> bool:
        return self.offset >= self.size
