"""Shared fixtures: a fresh workspace folder per test, and the repository root.

The fixtures of the helper modules below (tiny_template, tiny_ws; train_workspace; eval_workspace,
one_torch_thread) are registered here, so every test asks for them by name; test files import
those modules only for their plain helpers.
"""

from __future__ import annotations

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
