"""Fixtures for the queue and supervisor tests: a tiny prepared workspace, the CLI in a
subprocess, waiting helpers, and clean-up of the processes a test started."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import REPO

STDLIB = Path(json.__file__).parent.parent

# A model of a few thousand parameters, fp32 on the CPU: each step takes milliseconds, so
# the tests spend their time on process start-up, not on training.
_MODEL = "{ dim = 32, n_layers = 1, n_heads = 2, n_kv_heads = 1, ffn_dim = 64, max_seq_len = 64 }"
_COMMON = f"""model = {_MODEL}
seq_len = 32
micro_batch = 4
grad_accum = 1
warmup_steps = 2
device = "cpu"
precision = "fp32"
compile = "off"
eval_batches = 1
keep_checkpoints = 2
"""

_HEADER = f"""
[profile]
name = "tiny"
seed = 7
[mix]
code = 0.6
science = 0.4
[data]
target_tokens = 40000
heldout_fraction = 0.05
[tokenizer]
vocab_size = 512
sample_chars = 200000
threads = 1
[[sources]]
name = "json"
domain = "code"
format = "text"
path = "{STDLIB}/json/*.py"
[[sources]]
name = "email-docs"
domain = "science"
format = "text"
path = "{STDLIB}/email/*.py"
split = "paragraph"
"""

STAGES = {
    # Two short stages, the second initialised from the first.
    "first": "max_steps = 16\ncheckpoint_every = 8\neval_every = 8\n",
    "second": 'init_from = "first"\nmax_steps = 12\ncheckpoint_every = 6\neval_every = 6\n',
    # Long enough to be stopped mid-way, short enough to finish after a resume.
    "medium": "max_steps = 200\ncheckpoint_every = 10\neval_every = 0\n",
    # Never finishes within a test: for crashes, adoption and signals.
    "long": "max_steps = 100000\ncheckpoint_every = 20\neval_every = 0\nmax_restarts = 1\n",
}


def tiny_profile(stages: tuple[str, ...] = tuple(STAGES)) -> str:
    """The tiny profile's TOML with the named stages (the data side is the same for all)."""
    return _HEADER + "".join(f"\n[[stages]]\nname = \"{name}\"\n{_COMMON}{STAGES[name]}" for name in stages)


def _have_trainer() -> bool:
    try:
        return importlib.util.find_spec("engine.train.__main__") is not None
    except ImportError:
        return False


needs_trainer = pytest.mark.skipif(not _have_trainer(), reason="engine.train (the trainer) has not landed yet")


def fcwork(ws: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, stdin closed, and capture its output."""
    env = {**os.environ, "COLUMNS": "200"}  # wide enough that rich tables keep whole cells
    return subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws), *args], env=env,
                          capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL, timeout=timeout)


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             context: Callable[[], str] | None = None, poll: float = 0.1) -> object:
    """Poll until `predicate()` is truthy; fail the test naming `what` (and `context()`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{context()}" if context else ""))


def events(run_dir: Path) -> list[dict]:
    """All events of a run (parsed with the engine's reader)."""
    from engine.jobs.events import read_events

    path = Path(run_dir) / "events.jsonl"
    return read_events(path, 0)[0] if path.exists() else []


def statuses(run_dir: Path) -> list[str]:
    return [e["state"] for e in events(run_dir) if e.get("type") == "status"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def kill_workspace_processes(root: Path) -> None:
    """SIGKILL the supervisor and trainers still holding locks in a test workspace (ours only)."""
    from engine.jobs.locks import holder_pid

    locks = [root / "supervisor.lock", *sorted((root / "runs").glob("*/trainer.lock"))]
    for lock in locks:
        pid = holder_pid(lock)
        if pid and pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """A workspace with the tiny profile's corpus, tokenizer and shards, built once per session."""
    if not _have_trainer():
        pytest.skip("engine.train (the trainer) has not landed yet")
    from engine.data.pipeline import prepare_data
    from engine.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("tiny-template") / "ws")
    ws.init()
    (ws.profiles_dir / "tiny.toml").write_text(tiny_profile())
    prepare_data(ws, ws.load_profile("tiny"))
    return ws.root


@pytest.fixture
def tiny_ws(tiny_template, tmp_path, monkeypatch):
    """A fresh copy of the prepared tiny workspace; its processes are killed at teardown."""
    from engine.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(tiny_template, root, symlinks=True)
    monkeypatch.setenv("FCWORK_WORKSPACE", str(root))
    monkeypatch.setenv("FCWORK_TRAIN_THREADS", "1")  # the supervisor and its trainers inherit it
    ws = Workspace(root)
    yield ws
    kill_workspace_processes(root)
