"""Control requests: how the TUI and CLI ask a running trainer to change its mix or to stop.

The file holds `request_id` (an increasing integer), an optional `mix` table and an optional
`stop` flag. Writers replace it atomically under a lock, with the next request id; the trainer
acts on each new request id once (see engine.train.watch) and answers with an event.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import tomli_w

from engine.atomic import atomic_write_text
from engine.errors import ControlError, MixError
from engine.mix import check_mix
from engine.profile import describe_value

_KEYS = ("request_id", "mix", "stop")


@dataclass(frozen=True)
class ControlRequest:
    """One validated request: a new mix (weights as written, not normalised), a stop, or both."""

    request_id: int
    mix: dict[str, float] | None = None
    stop: bool = False


def parse_control(text: str, origin: str = "<control request>", domains: Iterable[str] | None = None) -> ControlRequest:
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
    """The request's mix by the mix rule (engine.mix.check_mix), as floats; errors name `origin`."""
    try:
        # An unknown domain keeps control.toml's wording, which tests and scripts match.
        return check_mix(mix, domains, unknown="unknown domain ({domains_of}'s domains: {known})")
    except MixError as exc:
        raise ControlError(f"{origin}: {exc}") from None


def read_control(path: Path, domains: Iterable[str] | None = None) -> ControlRequest | None:
    """The current request in the control file at `path`, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ControlError(f"{path}: expected UTF-8 text, got an undecodable byte at offset {exc.start}") from None
    return parse_control(text, str(path), domains)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise writers (a TUI and a CLI on one run) around read-increment-write."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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


def write_control(path: Path, lock_path: Path, mix: dict[str, float] | None = None, stop: bool = False) -> int:
    """Write a new request to the control file at `path` (atomically, with the next request id,
    under `lock_path`) and return its id."""
    if mix is None and not stop:
        raise ControlError(f"{path}: a request needs a mix or stop = true")
    if mix is not None:
        mix = validate_mix(mix, str(path))
    with _locked(lock_path):
        rid = max(_last_request_id(path), 0) + 1
        data: dict[str, Any] = {"request_id": rid}
        if mix is not None:
            data["mix"] = mix
        if stop:
            data["stop"] = True
        atomic_write_text(path, tomli_w.dumps(data))
    return rid
