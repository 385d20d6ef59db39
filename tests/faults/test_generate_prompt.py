"""The workbench's generate screen hands any prompt to its `fcwork generate` child as text: a
prompt that looks like an option (`--help`, `-n 5`) is continued, not parsed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO
from tests.eval_fixtures import clone_run


@pytest.mark.parametrize("prompt, chat", [("--help", False), ("-n 5", True)])
def test_a_prompt_like_an_option_is_generated_from(eval_workspace, prompt, chat):  # noqa: F811
    from fcwork.widgets.generate_screen import generate_command

    ws = eval_workspace.ws
    run = clone_run(eval_workspace.run, ws.runs_dir / f"29980201-000000-option{int(chat)}")
    try:
        argv = generate_command(ws.root, run.name, prompt, chat)
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(run)
    assert done.returncode == 0, done.stderr
    assert "usage:" not in done.stdout + done.stderr
    summary = " ".join(done.stderr.split())  # rich may wrap the summary line
    assert "stopped at" in summary
    assert int(re.search(r"(\d+) prompt tokens", summary).group(1)) >= 2  # the prompt reached the model
