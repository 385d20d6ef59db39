"""Shared fixtures: a fresh workspace folder per test, and the repository root.

The fixtures of the helper modules below (tiny_template, tiny_ws; train_workspace; eval_workspace,
one_torch_thread) are registered here, so every test asks for them by name; test files import
those modules only for their plain helpers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ("tests.queue_fixtures", "tests.train_fixtures", "tests.eval_fixtures", "tests.faults.fault_fixtures")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace with the shipped profiles, also set as $FCWORK_WORKSPACE."""
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.init()
    monkeypatch.setenv("FCWORK_WORKSPACE", str(ws.root))
    return ws


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (llama.cpp, long end-to-end)")


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only with --slow, so the default suite stays within CI's budget."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="marked slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """Workers for `-n auto` (pyproject's addopts): one per CPU this process may use, at most
    MAX_WORKERS; none on a single CPU, or when updating snapshots (syrupy in one worker would
    count the snapshots of the tests another worker ran as unused)."""
    if config.getoption("--snapshot-update", default=False):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0
