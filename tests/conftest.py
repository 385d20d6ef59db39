"""Shared fixtures: a fresh workspace folder per test, and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace with the shipped profiles, also set as $FCWORK_WORKSPACE."""
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.init()
    monkeypatch.setenv("FCWORK_WORKSPACE", str(ws.root))
    return ws
