"""The detached supervisor with the real trainer: stage order, crashes and restarts, user
errors, one supervisor per workspace, surviving SIGHUP, adoption after a supervisor dies,
cancel and resume, and the train/run/runs/mix commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from engine.compat import tomllib
from pathlib import Path

from engine.jobs.queue import StageQueue
from engine.jobs.procs import ensure_supervisor, supervisor_pid, trainer_pid
from tests.conftest import REPO
from tests.queue_fixtures import events, fcwork, needs_trainer, pid_alive, statuses, tiny_profile, wait_for

IDLE = 1.0


def _entry(ws, entry_id):
    return StageQueue(ws).get(entry_id)


def _log_tail(ws) -> str:
    path = ws.root / "supervisor.log"
    return path.read_text()[-1500:] if path.exists() else "(no supervisor.log)"


def _wait_state(ws, entry_id, states, timeout=120):
    return wait_for(lambda: _entry(ws, entry_id).state in states and _entry(ws, entry_id), timeout,
                    f"entry {entry_id} to reach {states}", lambda: f"{_entry(ws, entry_id)}\n{_log_tail(ws)}")


def _wait_supervisor_exit(ws, timeout=120):
    wait_for(lambda: supervisor_pid(ws) is None, timeout, "the supervisor to exit")


def _wait_checkpoint(run_dir: Path, after: int = 0, timeout=90) -> int:
    def ckpt():
        steps = [e["step"] for e in events(run_dir) if e.get("type") == "checkpoint" and e["step"] > after]
        return steps[-1] if steps else 0
    return wait_for(ckpt, timeout, f"a checkpoint after step {after} in {run_dir.name}")


def _run_dir(ws, entry_id) -> Path:
    run_id = wait_for(lambda: _entry(ws, entry_id).run_id, 60, f"entry {entry_id} to get a run")
    return ws.runs_dir / run_id


# -- no trainer needed ----------------------------------------------------------------------

def test_one_supervisor_per_workspace(workspace):
    """Concurrent starters get the same supervisor; it exits once idle and frees the lock."""
    first = ensure_supervisor(workspace, idle_s=3.0)
    assert ensure_supervisor(workspace, idle_s=3.0) == first
    code = textwrap.dedent(f"""
        from pathlib import Path
        from engine.jobs.procs import ensure_supervisor
        from engine.workspace import Workspace
        print(ensure_supervisor(Workspace(Path({str(workspace.root)!r}))))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    assert [int(p.communicate(timeout=60)[0]) for p in procs] == [first, first]
    assert supervisor_pid(workspace) == first
    assert os.getsid(first) == first  # its own session: no terminal's hang-up reaches it
    _wait_supervisor_exit(workspace, timeout=30)
    wait_for(lambda: not pid_alive(first), 10, "the idle supervisor process to end")
    assert "supervisor %d exits" % first in (workspace.root / "supervisor.log").read_text()


# -- with the real trainer ------------------------------------------------------------------

@needs_trainer
def test_user_error_fails_without_restart(tiny_ws):
    """A run whose shards were damaged after it was created: the trainer exits 2 (a user error),
    and the entry fails once, with the trainer's reason, without a restart."""
    from engine.jobs.runs import create_run

    ws = tiny_ws
    q = StageQueue(ws)
    entry = q.add("tiny", "first")
    run_dir = create_run(ws, ws.load_profile("tiny"), "first")
    q.update(entry.id, run_id=run_dir.name)
    shard = ws.tok_dir("tiny") / "code.bin"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    ensure_supervisor(ws, idle_s=IDLE)
    done = _wait_state(ws, entry.id, ("failed", "done"), timeout=90)
    assert done.state == "failed" and done.restarts == 0, done
    assert "code.bin" in done.message, done.message
    assert "\n" not in done.message
    assert statuses(run_dir).count("starting") == 1
    assert (run_dir / "trainer.log").exists()


@needs_trainer
def test_crash_is_restarted_from_checkpoint_then_fails(tiny_ws):
    """SIGKILL (an OOM kill, say) is a crash: restarted from the last checkpoint, up to
    max_restarts (1 here), then failed with the reason."""
    ws = tiny_ws
    entry = StageQueue(ws).add("tiny", "long")
    ensure_supervisor(ws, idle_s=IDLE)
    run_dir = _run_dir(ws, entry.id)
    ckpt = _wait_checkpoint(run_dir)
    first_pid = _entry(ws, entry.id).pid
    assert first_pid > 0 and trainer_pid(run_dir) == first_pid
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: _entry(ws, entry.id).restarts == 1 and _entry(ws, entry.id).pid not in (0, first_pid), 60,
             "the restart")
    second_pid = _entry(ws, entry.id).pid
    assert "restart 1/1 after: killed by SIGKILL" in _entry(ws, entry.id).message
    # The restarted trainer resumes from the checkpoint, not from step 0.
    wait_for(lambda: statuses(run_dir).count("starting") == 2 and any(
        e.get("type") == "step" and e["step"] > ckpt for e in events(run_dir)[_last_start(run_dir):]), 90,
        "the restarted trainer to train past the checkpoint")
    after = events(run_dir)[_last_start(run_dir):]
    first_step = next(e["step"] for e in after if e.get("type") == "step")
    assert first_step > ckpt, (first_step, ckpt)
    os.kill(second_pid, signal.SIGKILL)
    failed = _wait_state(ws, entry.id, ("failed",), timeout=60)
    assert failed.restarts == 1
    assert failed.message == "crashed after 1 restart: killed by SIGKILL", failed.message
    kinds = [(e["type"], e.get("state"), e.get("source")) for e in events(run_dir)]
    assert ("error", None, "supervisor") in kinds
    _wait_supervisor_exit(ws, timeout=30)


def _last_start(run_dir: Path) -> int:
    evs = events(run_dir)
    return max(i for i, e in enumerate(evs) if e.get("type") == "status" and e.get("state") == "starting")


@needs_trainer
def test_survives_sighup_of_the_starting_shell(tiny_ws):
    """Started from a shell in its own process group; the group gets SIGHUP (the SSH session
    drops): the shell dies, the supervisor and the trainer carry on to the end."""
    ws = tiny_ws
    entry = StageQueue(ws).add("tiny", "first")
    shell = subprocess.Popen(
        ["setsid", "bash", "-c", f'"{sys.executable}" -m fcwork.cli queue start --workspace "{ws.root}"; sleep 60'],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _entry(ws, entry.id).pid > 0, 60, "the trainer to start", lambda: _log_tail(ws))
    sup = supervisor_pid(ws)
    trainer = _entry(ws, entry.id).pid
    leader = wait_for(lambda: _session_of(shell.pid), 10, "the shell's session")
    assert os.getsid(sup) != leader and os.getsid(trainer) != leader
    os.killpg(leader, signal.SIGHUP)
    assert shell.wait(timeout=10) == -signal.SIGHUP
    assert pid_alive(sup) and pid_alive(trainer)
    done = _wait_state(ws, entry.id, ("done", "failed", "cancelled"), timeout=120)
    assert (done.state, done.restarts) == ("done", 0), done
    _wait_supervisor_exit(ws, timeout=30)


def _session_of(pid: int) -> int:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return 0


@needs_trainer
def test_cancel_and_resume_running_stage(tiny_ws):
    """Cancel stops the trainer at a checkpoint; resume queues it again and it carries on from
    that checkpoint in the same run to the end."""
    ws = tiny_ws
    q = StageQueue(ws)
    entry = q.add("tiny", "medium")
    ensure_supervisor(ws, idle_s=IDLE)
    run_dir = _run_dir(ws, entry.id)
    ckpt = _wait_checkpoint(run_dir)
    assert q.cancel(entry.id).cancel_requested
    assert _entry(ws, entry.id).message == "stopping: checkpoint, then cancel"
    cancelled = _wait_state(ws, entry.id, ("cancelled", "done", "failed"), timeout=60)
    assert cancelled.state == "cancelled" and cancelled.message.startswith("cancelled at step"), cancelled
    assert statuses(run_dir)[-1] == "stopped"
    stopped_at = _wait_checkpoint(run_dir, after=ckpt - 1, timeout=5)
    assert ckpt <= stopped_at < 200
    r = fcwork(ws.root, "queue", "resume", str(entry.id), "--start")
    assert r.returncode == 0 and f"resumes from step-{stopped_at}" in r.stdout, (r.stdout, r.stderr)
    done = _wait_state(ws, entry.id, ("done", "failed"), timeout=120)
    assert (done.state, done.run_id, done.message) == ("done", cancelled.run_id, "finished at step 200"), done
    assert statuses(run_dir).count("starting") == 2
    resumed = events(run_dir)[_last_start(run_dir):]
    assert next(e["step"] for e in resumed if e.get("type") == "step") == stopped_at + 1
    assert sorted(p.name for p in ws.runs_dir.iterdir()) == [run_dir.name]  # the same run, no new one


@needs_trainer
def test_adoption_mix_and_sigterm(tiny_ws):
    """Kill the supervisor: its trainer keeps training; a new supervisor waits on it instead
    of starting a second one. `fcwork mix` reaches that trainer and reports the step the mix
    took effect at. SIGTERM to the supervisor stops the trainer at a checkpoint and puts the
    entry back in the queue."""
    ws = tiny_ws
    entry = StageQueue(ws).add("tiny", "long")
    old = ensure_supervisor(ws, idle_s=IDLE)
    run_dir = _run_dir(ws, entry.id)
    _wait_checkpoint(run_dir)
    trainer = _entry(ws, entry.id).pid
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: supervisor_pid(ws) is None, 10, "the killed supervisor's lock to drop")
    assert pid_alive(trainer) and trainer_pid(run_dir) == trainer
    new = ensure_supervisor(ws, idle_s=IDLE)
    assert new != old
    wait_for(lambda: "adopted" in _entry(ws, entry.id).message, 30, "the new supervisor to adopt the trainer",
             lambda: _log_tail(ws))
    assert _entry(ws, entry.id).pid == trainer and statuses(run_dir).count("starting") == 1

    r = fcwork(ws.root, "mix", run_dir.name, "code=3", "science=1", "--timeout", "60")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "applied from step" in r.stdout and "code=0.750 science=0.250" in r.stdout
    (ack,) = [e for e in events(run_dir) if e.get("type") == "mix"]
    assert f"applied from step {ack['step']}:" in r.stdout
    r = fcwork(ws.root, "mix", run_dir.name, "chess=1")
    assert r.returncode == 2 and "mix.chess: expected a domain of the run (code, science)" in r.stderr

    os.kill(new, signal.SIGTERM)
    wait_for(lambda: not pid_alive(new), 60, "the supervisor to stop after SIGTERM", lambda: _log_tail(ws))
    assert not pid_alive(trainer)
    back = _entry(ws, entry.id)
    assert back.state == "queued" and back.message.startswith("interrupted at step"), back
    assert statuses(run_dir)[-1] == "stopped"


@needs_trainer
def test_cli_train_and_runs(tiny_ws):
    ws = tiny_ws
    r = fcwork(ws.root, "train", "tiny", "first")
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = list(ws.runs_dir.iterdir())
    assert f"run {run_dir.name}: finished at step 16/16 (exit 0)" in r.stderr
    assert not (ws.root / "queue.toml").exists()  # foreground training bypasses the queue
    r = fcwork(ws.root, "runs", "list")
    assert r.returncode == 0 and run_dir.name in r.stdout and "finished" in r.stdout, r.stderr
    r = fcwork(ws.root, "runs", "show", run_dir.name)
    assert r.returncode == 0, r.stderr
    assert "step-16" in r.stdout and "held-out loss by domain" in r.stdout and "science" in r.stdout
    assert "probes during training" in r.stdout and "code: body compiles" in r.stdout
    assert "passes over each domain: code " in " ".join(r.stdout.split())  # epochs from the step events
    steps = [e for e in events(run_dir) if e.get("type") == "step"]
    assert set(steps[-1]["epochs"]) == {"code", "science"} and steps[-1]["epochs"]["code"] > steps[0]["epochs"]["code"] > 0
    r = fcwork(ws.root, "runs", "show", "no-such-run")
    assert r.returncode == 2 and "no run 'no-such-run'" in r.stderr
    r = fcwork(ws.root, "mix", run_dir.name, "code=1")
    assert r.returncode == 2 and "no trainer is running" in r.stderr
    r = fcwork(ws.root, "train", "tiny", "nope")
    assert r.returncode == 2 and "no stage named 'nope'" in r.stderr


@needs_trainer
def test_run_whole_profile_stages_in_order(tiny_ws):
    """`fcwork run` on prepared data queues every stage; the supervisor runs them one after the
    other to done (the second from the first's final checkpoint); the summary shows the evals."""
    ws = tiny_ws
    (ws.profiles_dir / "tiny.toml").write_text(tiny_profile(("first", "second")))
    r = fcwork(ws.root, "run", "tiny")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data of tiny: up to date" in r.stderr
    a, b = StageQueue(ws).read()
    assert [(e.stage, e.state, e.message) for e in (a, b)] == [
        ("first", "done", "finished at step 16"), ("second", "done", "finished at step 12")]
    run_a, run_b = ws.runs_dir / a.run_id, ws.runs_dir / b.run_id
    assert statuses(run_a)[-1] == "finished" and statuses(run_b)[-1] == "finished"
    assert events(run_b)[0]["time"] >= events(run_a)[-1]["time"]  # one after the other
    init = tomllib.loads((run_b / "stage.toml").read_text())["paths"]["init_from"]
    assert init and Path(init).is_relative_to(run_a)
    row = next(line for line in r.stdout.splitlines() if "second" in line and "done" in line)
    assert "6:" in row and "12:" in row  # first and last eval steps of the second stage
    _wait_supervisor_exit(ws, timeout=30)


@needs_trainer
def test_cli_train_ctrl_c_stops_cleanly(tiny_ws):
    """Ctrl-C on `fcwork train` asks the trainer to stop: it checkpoints, and the exit code is its 0."""
    ws = tiny_ws
    proc = subprocess.Popen([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws.root), "train", "tiny", "long"],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = wait_for(lambda: next(iter(ws.runs_dir.iterdir()), None), 30, "the run folder")
        ckpt = _wait_checkpoint(run_dir)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopping: the trainer checkpoints" in err and "stopped at step" in err
    assert statuses(run_dir)[-2:] == ["stopping", "stopped"]
    assert _wait_checkpoint(run_dir, after=ckpt - 1, timeout=1) >= ckpt
    assert trainer_pid(run_dir) is None


@needs_trainer
def test_cancelled_stage_holds_the_stage_that_starts_from_it(tiny_ws):
    """Cancel a stage while the next one (init_from it) is queued: the next one waits instead of
    failing for want of a finished run, the supervisor goes idle and exits, and resuming the first
    runs both, the second from the first's final checkpoint."""
    from tests.queue_fixtures import _COMMON

    ws = tiny_ws
    (ws.profiles_dir / "tiny.toml").write_text(
        tiny_profile(("medium",)) + f'\n[[stages]]\nname = "after"\n{_COMMON}init_from = "medium"\n'
        'max_steps = 6\ncheckpoint_every = 6\neval_every = 0\n')
    q = StageQueue(ws)
    a, b = q.add_many("tiny", ["medium", "after"])
    ensure_supervisor(ws, idle_s=IDLE)
    _wait_checkpoint(_run_dir(ws, a.id))
    q.cancel(a.id)
    assert _wait_state(ws, a.id, ("cancelled", "done", "failed"), timeout=60).state == "cancelled"
    _wait_supervisor_exit(ws, timeout=30)  # nothing it may run: idle, then gone
    held = _entry(ws, b.id)
    assert (held.state, held.run_id) == ("queued", ""), held
    assert held.message == f"waiting for medium (#{a.id}, cancelled): resume #{a.id}, or remove this entry"
    r = fcwork(ws.root, "queue", "resume", str(a.id), "--start")
    assert r.returncode == 0, r.stderr
    done = _wait_state(ws, b.id, ("done", "failed"), timeout=180)
    first = _entry(ws, a.id)
    assert (done.state, first.state) == ("done", "done"), (done, first)
    init = tomllib.loads((ws.runs_dir / done.run_id / "stage.toml").read_text())["paths"]["init_from"]
    assert Path(init).is_relative_to(ws.runs_dir / first.run_id)
    _wait_supervisor_exit(ws, timeout=30)


@needs_trainer
def test_cli_run_ctrl_c_detaches_and_the_stage_trains_on(tiny_ws):
    """Ctrl-C on `fcwork run` stops following, not training: exit 130, the entry still runs."""
    ws = tiny_ws
    (ws.profiles_dir / "tiny.toml").write_text(tiny_profile(("long",)))
    proc = subprocess.Popen([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws.root), "run", "tiny"],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = wait_for(lambda: next(iter(ws.runs_dir.iterdir()), None), 60, "the run folder")
        _wait_checkpoint(run_dir)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "detached; the stages keep training" in err, err[-2000:]
    (entry,) = StageQueue(ws).read()
    assert entry.state == "running" and trainer_pid(run_dir) is not None
    StageQueue(ws).cancel(entry.id)
    assert _wait_state(ws, entry.id, ("cancelled", "failed"), timeout=60).state == "cancelled"
    _wait_supervisor_exit(ws, timeout=30)
