"""Typed errors the engine raises; the CLI and the TUI turn them into one-line messages."""

import json
from typing import Any


class FcError(Exception):
    """A user-facing error: its message is one line naming the file, key or value at fault."""


class ProfileError(FcError):
    """A profile file is missing, unreadable or does not validate."""


class MixError(FcError):
    """A domain mix does not validate; the message is the key path and what was expected, without
    a file: the caller prefixes where the mix came from and re-raises its own error class."""


class DataError(FcError):
    """Source data, a corpus or a shard is missing, malformed or does not match."""


class TokenizerError(FcError):
    """A tokenizer is missing, failed to train or does not match what was expected."""


class ShardError(DataError):
    """A shard file has a bad header, is truncated, or was made with another tokenizer."""


class ModelError(FcError):
    """A model shape is invalid, or weights do not fit the shape they are loaded into."""


class QueueError(FcError):
    """queue.toml is malformed, or a queue operation is not allowed in an entry's state."""


class SupervisorError(FcError):
    """The detached supervisor could not be started or a trainer could not be spawned."""


class RunError(FcError):
    """A run folder, its stage.toml or a checkpoint is missing, malformed or does not match."""


class ControlError(FcError):
    """A control request is malformed or asks for something the run cannot do."""


class ServiceError(FcError):
    """A login service (launchd agent, systemd user unit) cannot be written, read or removed here."""


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the path and the reason: `/x/y: Permission denied`,
    `/a -> /b: No space left on device`; a path that exists as a file where a folder is wanted
    says so instead of the kernel's "File exists"."""
    import errno
    import os

    reason = exc.strerror or str(exc) or type(exc).__name__
    path = exc.filename
    if path is None:
        return reason
    path = os.fsdecode(path)
    if exc.errno == errno.EEXIST and os.path.exists(path) and not os.path.isdir(path):
        reason = "exists and is not a folder"
    if exc.filename2 is not None:
        return f"{path} -> {os.fsdecode(exc.filename2)}: {reason}"
    return f"{path}: {reason}"


def differing_prefixes(a: str, b: str, least: int = 12) -> tuple[str, str]:
    """Prefixes of two hex digests long enough to tell them apart (`least` characters at least),
    for messages that say "made with abc123..., expected abc124...": never two equal strings
    unless the digests are equal."""
    n = least
    while n < max(len(a), len(b)) and a[:n] == b[:n]:
        n += 4
    return a[:n], b[:n]


def describe_value(value: Any) -> str:
    """A TOML value as an error message quotes it: `"2k"`, `-5`, `true`, `a table`, `nothing`."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # quoted, a newline escaped: messages stay one line
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
