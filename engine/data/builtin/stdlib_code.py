"""Built-in source `python-stdlib`: the standard library's own .py files, one document per file.

Only top-level names in `sys.stdlib_module_names` are walked, so site-packages, lib-dynload
and build folders never come in. Library modules come first and test suites after them,
each group in a seed-shuffled order.
"""

from __future__ import annotations

import os
import random
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

MAX_FILE_CHARS = 200_000
TEST_DIRS = frozenset({"test", "tests", "idle_test"})


def stdlib_dir() -> Path:
    """The folder holding the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Sorted (library files, test-suite files) of the standard library's .py sources."""
    root = root or stdlib_dir()
    names = sys.stdlib_module_names
    lib: list[Path] = []
    tests: list[Path] = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return [], []
    for entry in entries:
        path = root / entry
        if entry.endswith(".py") and entry[:-3] in names and path.is_file():
            lib.append(path)
        elif (entry in names or entry == "test") and path.is_dir():  # `test` is not a listed module
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                rel = Path(dirpath).relative_to(root).parts
                is_test = entry == "test" or any(part in TEST_DIRS for part in rel)
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        (tests if is_test else lib).append(Path(dirpath) / name)
    return lib, tests


def _read(path: Path) -> str | None:
    """The file's text, or None when it is unreadable, not UTF-8, too long or holds NUL bytes."""
    try:
        if path.stat().st_size > MAX_FILE_CHARS * 4:
            return None
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) > MAX_FILE_CHARS or "\x00" in text or not text.strip():
        return None
    return text


def generate(seed: int, root: Path | None = None) -> Iterator[str]:
    """Yield the stdlib's source files, library before tests, each group shuffled by `seed`."""
    rng = random.Random(seed)
    lib, tests = stdlib_files(root)
    rng.shuffle(lib)
    rng.shuffle(tests)
    for path in lib + tests:
        text = _read(path)
        if text is not None:
            yield text
