"""Helpers for the fault tests: the CLI in a subprocess, folders made unwritable for real (for root
too), and the check that an error reached the user as one line and not as a traceback."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO


def fcwork(ws: Path | str, *args: str, stdin: bytes | None = None, timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m fcwork.cli --workspace WS ARGS` from this checkout; output captured as text."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fcwork.cli", "--workspace", str(ws), *args], cwd=REPO, env=full_env,
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True, timeout=timeout,
    )


def text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def one_error_line(result: subprocess.CompletedProcess, *parts: str) -> str:
    """The run failed with exactly one `fcwork: error:` line on stderr, holding each of `parts`."""
    err = text(result.stderr)
    assert result.returncode != 0, (text(result.stdout), err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fcwork: error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[str]:
    """Make folders and everything in them unwritable; yields the reason the OS will give.

    A user gets read-only permissions; root (whom permissions do not stop) gets the immutable
    attribute (chattr +i), and the test is skipped where the filesystem has none."""
    targets = [p for top in paths for p in [top, *sorted(top.rglob("*"))] if not p.is_symlink()]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in targets}
        for p in targets:
            os.chmod(p, stat.S_IMODE(modes[p]) & ~0o222)
        try:
            yield "Permission denied"
        finally:
            for p in reversed(targets):
                os.chmod(p, stat.S_IMODE(modes[p]))
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a folder read-only")
    try:
        done = subprocess.run(["chattr", "+i", *map(str, targets)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
        yield "Operation not permitted"
    finally:
        subprocess.run(["chattr", "-i", *map(str, targets)], capture_output=True)
