"""Control requests: how the TUI and CLI ask a running trainer to change its mix or to stop.

A run's requests are files `<id>.toml` in its requests folder (ids from 1, zero-padded), each
with an optional `mix` table and an optional `stop` flag. A writer takes the next id under the
folder's lock and links its file into place, so no writer can overwrite or renumber another's
request; ids only grow, even past a removed file (the last answered id counts too). The trainer drains the new ids
in order before its next optimizer step and answers every request with exactly one `answer`
event: applied at step N, superseded by request M, or rejected with why (engine.train.watch).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import tomli_w

from engine.atomic import atomic_create_text
from engine.compat import tomllib
from engine.errors import ControlError, MixError
from engine.jobs.locks import locked
from engine.mix import check_mix
from engine.profile import describe_value

LOCK_NAME = ".lock"
_KEYS = ("mix", "stop")
_NAME = re.compile(r"^(\d+)\.toml$")


@dataclass(frozen=True)
class ControlRequest:
    """One validated request: a new mix (weights as written, not normalised), a stop, or both."""

    request_id: int
    mix: dict[str, float] | None = None
    stop: bool = False


def request_path(folder: Path, request_id: int) -> Path:
    return Path(folder) / f"{request_id:08d}.toml"


def request_ids(folder: Path) -> list[int]:
    """The ids of the requests in `folder`, in order (none when it does not exist)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)


def parse_request(text: str, request_id: int, origin: str = "<control request>",
                  domains: Iterable[str] | None = None) -> ControlRequest:
    """Validate a request's TOML text; `domains` (the run's) is what a mix may name. Errors are one line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ControlError(f"{origin}: invalid TOML: {exc}") from None
    for key in data:
        if key not in _KEYS:
            raise ControlError(f"{origin}: {key}: unknown key (expected one of {', '.join(_KEYS)})")
    stop = data.get("stop", False)
    if not isinstance(stop, bool):
        raise ControlError(f"{origin}: stop: expected true or false, got {describe_value(stop)}")
    mix = data.get("mix")
    if mix is not None:
        mix = validate_mix(mix, origin, domains)
    if mix is None and not stop:
        raise ControlError(f"{origin}: expected a [mix] table or stop = true, got an empty request")
    return ControlRequest(request_id=request_id, mix=mix, stop=stop)


def validate_mix(mix: Any, origin: str, domains: Iterable[str] | None = None) -> dict[str, float]:
    """The request's mix by the mix rule (engine.mix.check_mix), as floats; errors name `origin`."""
    try:
        return check_mix(mix, domains, unknown="unknown domain ({domains_of}'s domains: {known})")
    except MixError as exc:
        raise ControlError(f"{origin}: {exc}") from None


def read_request(folder: Path, request_id: int, domains: Iterable[str] | None = None) -> ControlRequest:
    """One request of `folder`, validated; a missing, unreadable or invalid one is a ControlError."""
    path = request_path(folder, request_id)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ControlError(f"{path}: expected UTF-8 text, got an undecodable byte at offset {exc.start}") from None
    except OSError as exc:
        raise ControlError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_request(text, request_id, str(path), domains)


def send_request(folder: Path, mix: dict[str, float] | None = None, stop: bool = False, answered: int = 0) -> int:
    """Add a request to `folder` with the next id and return that id: above every request there and
    above `answered` (the last id the trainer answered), so removing files never brings back an id."""
    folder = Path(folder)
    if mix is None and not stop:
        raise ControlError(f"{folder}: a request needs a mix or stop = true")
    data: dict[str, Any] = {}
    if mix is not None:
        data["mix"] = validate_mix(mix, str(folder))
    if stop:
        data["stop"] = True
    folder.mkdir(exist_ok=True)
    text = tomli_w.dumps(data)
    with locked(folder / LOCK_NAME):
        rid = max(request_ids(folder) + [answered], default=0) + 1
        while True:  # the lock makes a taken id rare (a writer that ignored it); skip past it
            try:
                atomic_create_text(request_path(folder, rid), text)
                return rid
            except FileExistsError:
                rid += 1
