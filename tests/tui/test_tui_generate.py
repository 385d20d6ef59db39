"""The Eval pane's `g`: a prompt typed in the app streams a real checkpoint's continuation from a
`fcwork generate` child, the same text the CLI prints; a damaged checkpoint's one-line error shows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import Input, Log

from tests.eval_fixtures import clone_run
from tui_fixtures import REPO_ROOT, make_app, notifications, show_pane, wait_for

pytestmark = pytest.mark.anyio


async def _prompt(pilot, app, prompt: str):
    """Open the Eval pane's generate screen and submit `prompt`; returns the screen."""
    await show_pane(pilot, app, "f5")
    await pilot.press("g")
    await wait_for(pilot, lambda: app.screen.__class__.__name__ == "GenerateScreen",
                   what=f"the generate screen; notifications {[n.message for n in app._notifications]}")
    screen = app.screen
    screen.query_one("#gen-prompt", Input).value = prompt
    await pilot.press("enter")
    return screen


async def test_try_the_model_streams_what_the_cli_prints(eval_workspace, tmp_path):  # noqa: F811
    ws = eval_workspace.ws
    run = clone_run(eval_workspace.run, ws.runs_dir / "29990101-000000-try")  # the newest: the pane's first run
    try:
        await _try_it(ws, run)
    finally:
        shutil.rmtree(run)


async def _try_it(ws, run) -> None:
    cli = subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws.root), "generate", run.name,
                          "def add(", "-n", "200"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    app = make_app(ws, profile="evalfx")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _prompt(pilot, app, "def add(")
        status = screen.query_one("#gen-status")
        await wait_for(pilot, lambda: "tok/s" in str(status.render()) or "error" in str(status.render()),
                       timeout=120, what="the generation to end")
        assert "stopped at" in str(status.render()), str(status.render())
        text = "\n".join(screen.query_one("#gen-output", Log).lines)
        assert text.rstrip("\n") == ("def add(" + cli.stdout).rstrip("\n")
        await pilot.press("ctrl+t")
        assert "chat" in str(screen.query_one("#gen-mode").render()).split(":")[0]
        screen.query_one("#gen-prompt", Input).value = "What is 2+2?"
        await pilot.press("enter")  # then close at once: the child is stopped, nothing fails
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ != "GenerateScreen", what="the screen to close")
        await wait_for(pilot, lambda: screen.proc is not None and screen.proc.poll() is not None, timeout=30,
                       what="the child to end")
        await pilot.pause(0.3)
        assert app.is_running and not [n for n in notifications(app) if "fail" in n.lower() or "error" in n.lower()]


async def test_try_a_damaged_checkpoint_shows_the_error(eval_workspace, tmp_path):  # noqa: F811
    ws = eval_workspace.ws
    bare = clone_run(eval_workspace.run, ws.runs_dir / "29990102-000000-bare")
    for weights in (bare / "ckpt").glob("step-*/model.safetensors"):
        weights.write_bytes(b"not safetensors")
    try:
        app = make_app(ws, profile="evalfx")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await _prompt(pilot, app, "x")
            status = screen.query_one("#gen-status")
            await wait_for(pilot, lambda: "not a readable safetensors file" in str(status.render()), timeout=120,
                           what=f"the child's one-line error; status: {status.render()}")
    finally:
        shutil.rmtree(bare)


async def test_export_from_the_eval_pane(eval_workspace, tmp_path):  # noqa: F811
    """x picks a format; a `fcwork export` child writes it and the notification names the folder."""
    ws = eval_workspace.ws
    run = clone_run(eval_workspace.run, ws.runs_dir / "29990103-000000-export")
    try:
        app = make_app(ws, profile="evalfx")
        async with app.run_test(size=(120, 40)) as pilot:
            await show_pane(pilot, app, "f5")
            await pilot.press("x")
            await wait_for(pilot, lambda: app.screen.__class__.__name__ == "PickScreen", what="the format list")
            await pilot.press("down", "down", "down", "down", "enter")  # gguf f32
            await wait_for(pilot, lambda: any(n.startswith("exported ") for n in notifications(app)), timeout=120,
                           what=f"the export; notifications {notifications(app)}")
        done = next(n for n in notifications(app) if n.startswith("exported "))
        assert " as gguf f32 to " in done
        folder = Path(done.rsplit(" to ", 1)[1])
        assert folder.parent == run / "exports" and (folder / "model.gguf").stat().st_size > 0
    finally:
        shutil.rmtree(run)
