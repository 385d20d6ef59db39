"""A user's mistake about the disk reaches them as one line naming the path and the reason, never
as a traceback: a workspace under a file or in a read-only folder, `fcwork eval` and `fcwork export`
on a read-only run, an export `--out` under a file, invalid UTF-8 on `fcwork generate RUN -`'s stdin,
and (the CLI's last line of defence) an OSError that no command catches itself."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.eval_fixtures import clone_run
from tests.faults.fault_fixtures import fcwork, one_error_line, read_only, text

FAST_EVAL = ("--probes", "none", "--samples", "0", "--docs", "2", "--tokens", "256", "--threads", "1",
             "--device", "cpu")


@pytest.fixture
def run_copy(eval_workspace, request):  # noqa: F811
    """A copy of the eval fixture's run in its workspace (removed afterwards)."""
    ws = eval_workspace.ws
    name = "29980101-000000-" + request.node.name.replace("_", "-")[:40]
    run = clone_run(eval_workspace.run, ws.runs_dir / name)
    (run / "evals.jsonl").unlink(missing_ok=True)
    yield ws, run
    shutil.rmtree(run)


def test_workspace_under_a_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    r = fcwork(blocker / "ws", "profile", "list")
    one_error_line(r, f"{blocker / 'ws'}: cannot set up the workspace here", "Not a directory")
    r = fcwork(blocker, "profile", "list")
    one_error_line(r, f"{blocker}: workspace path exists and is not a folder")


def test_workspace_in_a_read_only_folder(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    with read_only(parent) as reason:
        r = fcwork(parent / "ws", "queue", "list")
    one_error_line(r, f"{parent / 'ws'}: cannot set up the workspace here", reason)
    assert r.returncode == 2 and not (parent / "ws").exists()


def test_the_app_with_a_workspace_under_a_file(tmp_path):
    """`fcwork --workspace X` opens the TUI: a bad X is the same one line, before any screen."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    r = fcwork(blocker / "ws", timeout=60)
    one_error_line(r, f"{blocker / 'ws'}", "Not a directory")


def test_eval_of_a_read_only_run_shows_the_result_then_says_it_was_not_saved(run_copy):
    ws, run = run_copy
    with read_only(run) as reason:
        r = fcwork(ws.root, "eval", run.name, *FAST_EVAL)
    out = text(r.stdout)
    assert "held-out" in out and "bits/byte" in out and "step 20" in out, out  # the whole result, first
    line = one_error_line(r, "the eval above could not be saved", f"{run / 'evals.jsonl'}: {reason}")
    assert r.returncode == 1, line
    assert not (run / "evals.jsonl").exists()
    r = fcwork(ws.root, "eval", run.name, *FAST_EVAL)  # writable again: saved as usual
    assert r.returncode == 0, text(r.stderr)
    assert [rec["step"] for rec in map(json.loads, (run / "evals.jsonl").read_text().splitlines())] == [20]


def test_export_of_a_read_only_run(run_copy):
    ws, run = run_copy
    with read_only(run) as reason:
        r = fcwork(ws.root, "export", run.name, "--format", "hf")
    one_error_line(r, f"{run / 'exports' / 'hf-f32-step20'}: cannot write the export", reason)
    assert not (run / "exports").exists()


def test_export_out_under_a_file(run_copy, tmp_path):
    ws, run = run_copy
    blocker = tmp_path / "model.bin"
    blocker.write_bytes(b"not a folder")
    r = fcwork(ws.root, "export", run.name, "--format", "gguf", "--out", str(blocker / "out"))
    one_error_line(r, f"{blocker / 'out'}: cannot write the export ({blocker}: exists and is not a folder)")
    assert blocker.read_bytes() == b"not a folder"


def test_generate_with_invalid_utf8_on_stdin(run_copy):
    ws, run = run_copy
    r = fcwork(ws.root, "generate", run.name, "-", "-n", "4", stdin=b"def f(x):\n    return \xff\xfe x\n")
    one_error_line(r, "prompt: stdin is not UTF-8 text", "at byte 21")
    assert r.returncode == 2
    r = fcwork(ws.root, "generate", run.name, "-", "-n", "4", "-t", "0", stdin="def f(x): # é\n".encode())
    assert r.returncode == 0 and "stopped at" in text(r.stderr), text(r.stderr)


def test_an_oserror_no_command_catches_is_one_line(tmp_path):
    """The last line of defence in fcwork/cli.py: `data build` into a read-only data folder."""
    ws = tmp_path / "ws"
    assert fcwork(ws, "profile", "list").returncode == 0
    with read_only(ws / "data") as reason:
        r = fcwork(ws, "data", "build", "default", "--workers", "1", timeout=120)
    one_error_line(r, f"{ws / 'data' / 'default'}: {reason}")
    assert r.returncode == 1
