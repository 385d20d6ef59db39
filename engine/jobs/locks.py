"""Lock files with a pid in them: liveness is a held flock, never a pid check.

A lock is held exactly as long as its holder lives, whoever its parent is; a pid file alone
cannot tell a live process from a reused pid. The supervisor, the trainer and the queue use these.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator


def open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (made if missing), waiting for it; closing the fd releases it."""
    fd = open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_flock(fd: int, patience_s: float = 0.0) -> bool:
    """Take an exclusive flock without blocking; retry for `patience_s` (a probe by another
    process holds the lock for an instant, which must not read as "taken")."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def write_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def holder_pid(lock_path: Path) -> int | None:
    """The pid written in a lock file whose flock is held now (-1 when unreadable), or None
    when nobody holds it."""
    if not lock_path.exists():
        return None
    fd = open_lock(lock_path)
    try:
        if try_flock(fd):
            return None
        return read_pid(lock_path) or -1
    finally:
        os.close(fd)
