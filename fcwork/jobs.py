"""Long engine work run for the TUI in a child process that reports progress as JSON lines.

`python -m fcwork.jobs tokenizer WORKSPACE PROFILE` trains the profile's tokenizer (what
`fcwork tokenizer train` does); `python -m fcwork.jobs data WORKSPACE PROFILE` prepares the
profile's data, each of corpus, tokenizer and shards only when out of date (`fcwork data prepare`);
`python -m fcwork.jobs eval WORKSPACE RUN` evaluates the run's latest checkpoint and appends the
record to its evals.jsonl (`fcwork eval RUN`). Each progress callback becomes `{"label", "done", "total"}`
on stdout; the end is `{"result": {...}}` (exit 0) or `{"error": "one line"}` (exit 2). A child
keeps SentencePiece out of the app's process and its GIL, and dies with nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from typing import Callable

JOBS = ("tokenizer", "data", "eval")


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_job(job: str, workspace: str, profile: str) -> dict:
    """Run one job in this process; returns its result as plain data (`profile` is the run for eval)."""
    from engine.data import pipeline
    from engine.workspace import Workspace

    ws = Workspace.open(workspace)

    def progress(label: str, done: int, total: int) -> None:
        _emit({"label": label, "done": done, "total": total})

    if job == "eval":
        return _eval(ws, profile, progress)
    prof = ws.load_profile(profile)

    if job == "tokenizer":
        return asdict(pipeline.train_profile_tokenizer(ws, prof, progress))
    if job == "data":
        return {"ran": pipeline.prepare_data(ws, prof, progress)}
    raise ValueError(f"job: expected one of {', '.join(JOBS)}, got {job!r}")


def _eval(ws, run: str, progress: Callable[[str, int, int], None]) -> dict:
    """`fcwork eval RUN` with its progress as JSON lines: the device as the CLI picks it."""
    from rich.console import Console

    from engine.eval.harness import append_eval, eval_run
    from engine.jobs.rundir import RunDir
    from fcwork.commands.eval import eval_device

    run_dir = RunDir.resolve(ws, run).path
    device = eval_device(ws, "auto", Console(stderr=True))
    rec = eval_run(run_dir, None, device=device, save=False, progress=progress)
    append_eval(run_dir, rec)
    m = rec.get("metrics") or {}
    return {"run": rec.get("run"), "step": rec.get("step"), "bpb": m.get("bpb"), "device": device,
            "seconds": rec.get("seconds"), "checkpoint_sha256": rec.get("checkpoint_sha256")}


def main(argv: list[str] | None = None) -> int:
    from engine.errors import FcError

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in JOBS:
        _emit({"error": f"usage: python -m fcwork.jobs {{{','.join(JOBS)}}} WORKSPACE PROFILE|RUN, got {args!r}"})
        return 2
    try:
        result = run_job(*args)
    except FcError as exc:
        _emit({"error": str(exc)})
        return 2
    _emit({"result": result})
    return 0


def spawn(job: str, workspace: str | os.PathLike, profile: str) -> subprocess.Popen:
    """Start a job child: stdin closed, stdout piped (JSON lines), stderr to a temp file for crash text."""
    from engine.jobs.procs import child_env

    env = child_env()
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcwork.jobs", job, str(workspace), profile],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
    )
    proc.error_file = err  # type: ignore[attr-defined]
    return proc


def follow(proc: subprocess.Popen, on_progress: Callable[[str, int, int], None]) -> dict:
    """Read a job's lines until it ends; returns its result or raises FcError with its one-line error."""
    from engine.errors import FcError

    result, error = None, None
    for line in proc.stdout or ():
        try:
            msg = json.loads(line)
        except ValueError:  # a blank or stray line
            continue
        if "label" in msg:
            on_progress(str(msg["label"]), int(msg.get("done", 0)), int(msg.get("total", 0)))
        elif "result" in msg:
            result = msg["result"]
        elif "error" in msg:
            error = str(msg["error"])
    code = proc.wait()
    err = getattr(proc, "error_file", None)
    stderr = ""
    if err is not None:
        err.seek(0)
        stderr = err.read()
        err.close()
    if error:
        raise FcError(error)
    if code != 0 or result is None:
        last = (stderr.strip().splitlines() or [f"exit code {code}"])[-1]
        raise FcError(f"{proc.args[3]} job failed: {last}")
    return result


if __name__ == "__main__":
    sys.exit(main())
