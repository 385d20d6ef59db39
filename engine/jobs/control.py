"""control.toml: how the TUI and CLI ask a running trainer to change its mix or to stop.

The file holds `request_id` (an increasing integer), an optional `mix` table and an optional
`stop` flag. Writers replace it atomically under a lock, with the next request id; the trainer
acts on each new request id once (see engine.train.watch) and answers with an event.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
from engine.compat import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import tomli_w

from engine.atomic import atomic_write_text
from engine.errors import ControlError
from engine.profile import describe_value

CONTROL_FILE = "control.toml"
LOCK_FILE = ".control.lock"
_KEYS = ("request_id", "mix", "stop")


@dataclass(frozen=True)
class ControlRequest:
    """One validated request: a new mix (weights as written, not normalised), a stop, or both."""

    request_id: int
    mix: dict[str, float] | None = None
    stop: bool = False


def parse_control(text: str, origin: str = CONTROL_FILE, domains: Iterable[str] | None = None) -> ControlRequest:
    """Validate control.toml text; `domains` (the run's) is what a mix may name. Errors are one line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ControlError(f"{origin}: invalid TOML: {exc}") from None
    for key in data:
        if key not in _KEYS:
            raise ControlError(f"{origin}: {key}: unknown key (expected one of {', '.join(_KEYS)})")
    rid = data.get("request_id")
    if rid is None:
        raise ControlError(f"{origin}: request_id: missing (expected a non-negative integer)")
    if not isinstance(rid, int) or isinstance(rid, bool) or rid < 0:
        raise ControlError(f"{origin}: request_id: expected a non-negative integer, got {describe_value(rid)}")
    stop = data.get("stop", False)
    if not isinstance(stop, bool):
        raise ControlError(f"{origin}: stop: expected true or false, got {describe_value(stop)}")
    mix = data.get("mix")
    if mix is not None:
        mix = validate_mix(mix, origin, domains)
    return ControlRequest(request_id=rid, mix=mix, stop=stop)


def validate_mix(mix: Any, origin: str, domains: Iterable[str] | None = None) -> dict[str, float]:
    """A table of non-negative weights over known domains, not all zero; returned as floats."""
    if not isinstance(mix, dict):
        raise ControlError(f"{origin}: mix: expected a table of domain = weight, got {describe_value(mix)}")
    known = list(domains) if domains is not None else None
    out: dict[str, float] = {}
    for domain, w in mix.items():
        if known is not None and domain not in known:
            raise ControlError(f"{origin}: mix.{domain}: unknown domain (the run's domains: {', '.join(known)})")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ControlError(f"{origin}: mix.{domain}: expected a non-negative number, got {describe_value(w)}")
        out[domain] = float(w)
    if not out or sum(out.values()) <= 0:
        raise ControlError(f"{origin}: mix: expected at least one positive weight, got all zero")
    return out


def read_control(run_dir: str | os.PathLike, domains: Iterable[str] | None = None) -> ControlRequest | None:
    """The run's current request, or None when it has no control.toml."""
    path = Path(run_dir) / CONTROL_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ControlError(f"{path}: expected UTF-8 text, got an undecodable byte at offset {exc.start}") from None
    return parse_control(text, str(path), domains)


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Serialise writers (a TUI and a CLI on one run) around read-increment-write."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _last_request_id(path: Path) -> int:
    """The id in the current file; a damaged file still gives its digits, else -1."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return -1
    try:
        rid = tomllib.loads(text).get("request_id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            return rid
    except tomllib.TOMLDecodeError:
        pass
    m = re.search(r"request_id\s*=\s*(\d+)", text)
    return int(m.group(1)) if m else -1


def write_control(run_dir: str | os.PathLike, mix: dict[str, float] | None = None, stop: bool = False) -> int:
    """Write a new request (atomically, with the next request id) and return its id."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ControlError(f"{run_dir}: no such run folder")
    if mix is None and not stop:
        raise ControlError(f"{run_dir / CONTROL_FILE}: a request needs a mix or stop = true")
    if mix is not None:
        mix = validate_mix(mix, str(run_dir / CONTROL_FILE))
    path = run_dir / CONTROL_FILE
    with _locked(run_dir):
        rid = max(_last_request_id(path), 0) + 1
        data: dict[str, Any] = {"request_id": rid}
        if mix is not None:
            data["mix"] = mix
        if stop:
            data["stop"] = True
        atomic_write_text(path, tomli_w.dumps(data))
    return rid
