"""Past one device, on the CPU: torchrun with gloo and two ranks.

DDP, FSDP and one process with twice the accumulation train the same global batches (losses within
1e-5 for 20 steps); a checkpoint written by two ranks resumes in one process (and one written by one
process in two ranks); the supervisor launches the group, a mix change lands at the same step on
both ranks, and a rank killed with SIGKILL brings the group down and the supervisor back up, resuming
exactly. Each torchrun launch costs ~10 s of process start-up on 2 cores; the model trains in ms.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import tomli_w

from engine.compat import tomllib
from engine.jobs.procs import LaunchError, RDZV_ENV, ensure_supervisor, launch_command, spawn_trainer
from engine.jobs.queue import StageQueue
from engine.jobs.rundir import RunDir
from tests.train_fixtures import TrainWorkspace, events_of, log_tail, make_run, step_losses, train_here, wait_for

# One xdist worker for the whole module: `trained` (three trainings, two of them torchrun groups) is
# built once per worker that runs a test asking for it.
pytestmark = pytest.mark.xdist_group("distributed")

TOL = 1e-5
SHORT = dict(max_steps=20, checkpoint_every=10, eval_every=10, eval_probes=False)


def _train_ranks(run: Path, timeout: float = 300) -> int:
    """Train `run` as the supervisor would (through torchrun for devices > 1); its exit code."""
    proc = spawn_trainer(run)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its ranks die with it (PDEATHSIG)
        proc.wait()
        raise


def _max_diff(a: dict[int, float], b: dict[int, float]) -> float:
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    return max(abs(a[s] - b[s]) for s in a)


def _domain_losses(run: Path) -> dict[tuple[int, str], float]:
    return {(e["step"], d): v for e in events_of(run, "step") for d, v in e["domain_loss"].items()}


def _eval_losses(run: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events_of(run, "eval")}


@pytest.fixture(scope="module")
def trained(train_workspace):
    """The same 20 steps three ways: one process x grad_accum 4, and 2 ranks x 2 with DDP and FSDP."""
    saved = os.environ.get("FCWORK_TRAIN_THREADS")
    os.environ["FCWORK_TRAIN_THREADS"] = "1"  # the ranks inherit it: the same sums in every run
    try:
        one = make_run(train_workspace, "short", grad_accum=4, **SHORT)
        assert train_here(one) == 0, log_tail(one)
        runs = {"one": one}
        for strategy in ("ddp", "fsdp"):
            run = make_run(train_workspace, "short", grad_accum=2, devices=2, strategy=strategy, **SHORT)
            assert _train_ranks(run) == 0, log_tail(run, 60)
            runs[strategy] = run
    finally:
        if saved is None:
            os.environ.pop("FCWORK_TRAIN_THREADS", None)
        else:
            os.environ["FCWORK_TRAIN_THREADS"] = saved
    return runs


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_train_what_one_process_does_with_twice_the_accumulation(trained, strategy):
    one, run = trained["one"], trained[strategy]
    diff = _max_diff(step_losses(run), step_losses(one))
    print(f"{strategy}: max step loss difference over 20 steps: {diff:.3g}")
    assert diff < TOL
    assert _max_diff(_domain_losses(run), _domain_losses(one)) < TOL
    assert _max_diff(_eval_losses(run), _eval_losses(one)) < TOL
    assert [e["tokens"] for e in events_of(run, "step")] == [e["tokens"] for e in events_of(one, "step")]
    # Rank 0 alone wrote: one status of each kind, one event per checkpoint.
    statuses = events_of(run, "status")
    assert [s["state"] for s in statuses] == ["starting", "running", "finished"]
    assert statuses[-1]["device"] == f"cpu x 2 ({strategy})" and statuses[-1]["exit_code"] == 0
    assert [e["step"] for e in events_of(run, "checkpoint")] == [10, 20]
    saved = json.loads((run / "ckpt" / "step-20" / "state.json").read_text())
    assert saved["world_size"] == 2 and saved["sequence_cursor"] == 20 * 2 * 2 * 4
    assert saved["tokens_drawn"] == json.loads((one / "ckpt" / "step-20" / "state.json").read_text())["tokens_drawn"]
    log = (run / "trainer.log").read_text()
    assert "rank 1" not in log, log  # the other rank logs warnings and errors only


def test_an_auto_mix_reaches_every_rank_before_its_step(train_workspace, monkeypatch):
    """Rank 0 alone evaluates and decides; the other rank gets the mix with the next step's requests."""
    monkeypatch.setenv("FCWORK_TRAIN_THREADS", "1")
    auto = dict(SHORT, eval_every=5, mix_policy="auto")
    one = make_run(train_workspace, "short", grad_accum=4, **auto)
    assert train_here(one) == 0, log_tail(one)
    run = make_run(train_workspace, "short", grad_accum=2, devices=2, **auto)
    assert _train_ranks(run) == 0, log_tail(run, 60)
    mixes = {r: [(e["step"], e["mix"]) for e in events_of(r, "mix")] for r in (one, run)}
    assert [s for s, _ in mixes[run]] == [s for s, _ in mixes[one]] == [11, 16]
    assert _max_diff(step_losses(run), step_losses(one)) < TOL  # rank 1 drew by the same mixes
    assert _max_diff(_domain_losses(run), _domain_losses(one)) < TOL


def test_checkpoint_of_two_ranks_resumes_in_one_process(train_workspace, trained):
    import torch
    from safetensors.torch import load_file

    one, fsdp = trained["one"], trained["fsdp"]
    # The files are the usual ones: the same tensors under the same names as one process writes.
    mine, theirs = (load_file(str(r / "ckpt" / "step-10" / "model.safetensors")) for r in (fsdp, one))
    assert mine.keys() == theirs.keys()
    assert max((mine[k] - theirs[k]).abs().max().item() for k in mine) < TOL
    moments = [torch.load(r / "ckpt" / "step-10" / "optim.pt", weights_only=True) for r in (fsdp, one)]
    assert moments[0].keys() == moments[1].keys()

    # 2 ranks -> 1 process: the next ten losses are the two ranks' own.
    run = make_run(train_workspace, "short", grad_accum=4, **SHORT)
    shutil.copytree(fsdp / "ckpt" / "step-10", run / "ckpt" / "step-10")
    assert train_here(run) == 0, log_tail(run)
    diff = _max_diff(step_losses(run), {s: v for s, v in step_losses(fsdp).items() if s > 10})
    print(f"2 ranks (fsdp) -> 1 process: max loss difference, steps 11-20: {diff:.3g}")
    assert diff < TOL
    running = [s for s in events_of(run, "status") if s["state"] == "running"]
    assert running[-1]["message"] == "resumed from step-10"


def test_a_stage_on_two_devices_refuses_to_train_as_one_process(train_workspace):
    run = make_run(train_workspace, "short", devices=2, **SHORT)
    assert train_here(run) == 2
    error = events_of(run, "error")[-1]["message"]
    assert "stage.devices: the stage trains in 2 processes" in error and "\n" not in error
    assert events_of(run, "status")[-1]["exit_code"] == 2


def test_launch_command_uses_torchrun_past_one_device(train_workspace, monkeypatch):
    import sys

    one = make_run(train_workspace, "short")
    assert launch_command(RunDir(one)) == [sys.executable, "-m", "engine.train", str(one)]
    two = make_run(train_workspace, "short", devices=2)
    assert launch_command(RunDir(two)) == [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
        "-m", "engine.train", str(two)]
    nodes = make_run(train_workspace, "short", devices=8, nodes=2)
    monkeypatch.delenv(RDZV_ENV, raising=False)
    with pytest.raises(LaunchError, match=f"stage.nodes = 2: set {RDZV_ENV}=HOST:PORT"):
        launch_command(RunDir(nodes))
    monkeypatch.setenv(RDZV_ENV, "gpu0:29400")
    assert launch_command(RunDir(nodes))[3:13] == [
        "--nproc-per-node", "8", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "gpu0:29400",
        "--rdzv-id", nodes.name]


def test_the_trainers_own_exit_code_counts_over_torchruns():
    """torchrun's launcher exits 1 whenever a rank fails: the final status says a user error (2)."""
    from engine.jobs.supervisor import _trainer_exit

    running = {"type": "status", "state": "running"}
    user_error = [running, {"type": "error"}, {"type": "status", "state": "failed", "exit_code": 2}]
    assert _trainer_exit(user_error, 1) == 2
    assert _trainer_exit([running], 1) == 1  # a group that ended without a word: a crash
    assert _trainer_exit([running, {"type": "status", "state": "stopped", "exit_code": 0}], 1) == 0
    assert _trainer_exit([running], -9) == -9 and _trainer_exit(user_error, None) is None


@pytest.mark.parametrize("key, value, expected", [
    ("devices", 0, "stages[0].devices: expected a positive integer, got 0"),
    ("nodes", "2", 'stages[0].nodes: expected a positive integer, got "2"'),
    ("strategy", "zero3", "stages[0].strategy: expected 'ddp' or 'fsdp', got \"zero3\""),
])
def test_stage_devices_nodes_and_strategy_are_checked(key, value, expected):
    from engine.errors import ProfileError
    from engine.profile import loads_profile

    def profile(**stage) -> str:
        return tomli_w.dumps({"profile": {"name": "p"}, "mix": {"code": 1.0},
                              "stages": [{"name": "a", "max_steps": 10, "warmup_steps": 1, **stage}]})

    with pytest.raises(ProfileError) as err:
        loads_profile(profile(**{key: value}), "p.toml")
    assert str(err.value) == f"p.toml: {expected}"
    with pytest.raises(ProfileError, match='devices: expected 1 on device "mps"'):
        loads_profile(profile(device="mps", devices=2), "p.toml")
    st = loads_profile(profile(), "p.toml").stages[0]
    assert (st.devices, st.nodes, st.strategy, st.world_size) == (1, 1, "ddp", 1)
    st = loads_profile(profile(devices=4, nodes=2, strategy="fsdp"), "p.toml").stages[0]
    assert st.world_size == 8


def test_memory_estimate_splits_state_with_fsdp_only():
    from engine.model.config import PRESETS
    from engine.model.info import memory_estimate

    cfg = PRESETS["fc450"].with_vocab(50000)
    one = memory_estimate(cfg, 2048, 1, True, "bf16", "cuda")
    ddp = memory_estimate(cfg, 2048, 1, True, "bf16", "cuda", devices=8, strategy="ddp")
    fsdp = memory_estimate(cfg, 2048, 1, True, "bf16", "cuda", devices=8, strategy="fsdp")
    assert ddp["total"] == one["total"] and one["gathered"] == 0
    for part in ("weights", "grads", "optimizer"):
        assert fsdp[part] == -(-one[part] // 8)
    assert fsdp["cast_weights"] == 0 and 0 < fsdp["gathered"] < one["weights"] / 2
    assert fsdp["total"] < one["total"] / 2


# -- the supervisor and a rank that dies -------------------------------------------------------

def _copy_workspace(tw: TrainWorkspace, dest: Path) -> TrainWorkspace:
    """The prepared workspace without its runs: a queue and a supervisor of this test's own."""
    from engine.profile import load_profile
    from engine.workspace import Workspace

    shutil.copytree(tw.ws.root, dest, ignore=lambda d, names: ["runs"] if Path(d) == tw.ws.root else [])
    ws = Workspace(dest)
    return TrainWorkspace(ws=ws, profile=load_profile(ws.profiles_dir / "trainfx.toml"),
                          tokenizer_path=ws.tokenizer_path("trainfx"), tokenizer_hash=tw.tokenizer_hash,
                          vocab_size=tw.vocab_size)


def _ranks(launcher: int) -> dict[int, int]:
    """{rank: pid} of torchrun's workers, from /proc (Linux)."""
    children = []
    for task in Path(f"/proc/{launcher}/task").iterdir():
        children += (task / "children").read_text().split()
    out = {}
    for pid in map(int, children):
        env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        if "RANK" in env:
            out[int(env["RANK"])] = pid
    return out


def _attempts(run: Path) -> list[dict[int, float]]:
    """Step losses of each trainer attempt (an attempt begins with its `starting` status)."""
    out: list[dict[int, float]] = []
    for e in events_of(run):
        if e["type"] == "status" and e["state"] == "starting":
            out.append({})
        elif e["type"] == "step":
            out[-1][e["step"]] = e["loss"]
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks' pids in /proc")
def test_supervisor_runs_the_group_applies_a_mix_on_every_rank_and_restarts_it_after_a_rank_dies(
        train_workspace, tmp_path, monkeypatch):
    from engine.jobs.events import EventWriter
    from tests.queue_fixtures import kill_workspace_processes

    tw = _copy_workspace(train_workspace, tmp_path / "ws")
    monkeypatch.setenv("FCWORK_WORKSPACE", str(tw.ws.root))
    monkeypatch.setenv("FCWORK_TRAIN_THREADS", "1")  # the supervisor, torchrun and the ranks inherit it
    # A constant learning rate after warm-up: the 1-process reference may stop where the group stopped.
    stage = dict(schedule="constant", checkpoint_every=10, eval_every=0, max_restarts=1)

    # One process with twice the accumulation trains steps 1-10; the two ranks start from its checkpoint.
    ref = make_run(tw, "short", grad_accum=4, max_steps=10, **stage)
    assert train_here(ref) == 0, log_tail(ref)
    run = make_run(tw, "short", grad_accum=2, devices=2, strategy="fsdp", max_steps=100_000, **stage)
    shutil.copytree(ref / "ckpt" / "step-10", run / "ckpt" / "step-10")
    queue = StageQueue(tw.ws)
    entry = queue.add("trainfx", "short")
    queue.update(entry.id, run_id=run.name)
    rd = RunDir(run)

    def last_step() -> int:
        return max((e["step"] for e in events_of(run, "step")), default=0)

    def context() -> str:
        sup = tw.ws.root / "supervisor.log"
        return f"{queue.get(entry.id)}\n{log_tail(run, 40)}\n{sup.read_text()[-1500:] if sup.exists() else ''}"

    try:
        ensure_supervisor(tw.ws, idle_s=1.0)
        wait_for(lambda: last_step() >= 12, 180, f"the two ranks to train past step 12\n{context()}")
        mix_id = rd.send_request(mix={"code": 0.2, "science": 0.2, "chess": 0.6})
        mix = wait_for(lambda: [e for e in events_of(run, "mix") if e["request_id"] == mix_id], 60, "the mix")[0]
        ckpt_step = wait_for(lambda: max((e["step"] for e in events_of(run, "checkpoint") if e["step"] >= mix["step"]),
                                         default=0), 120, "a checkpoint after the mix")
        wait_for(lambda: last_step() >= ckpt_step + 3, 60, "steps after that checkpoint")
        launcher = queue.get(entry.id).pid
        ranks = _ranks(launcher)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)

        # The group goes down (rank 0 with it), the supervisor starts it again, it resumes and trains on.
        wait_for(lambda: queue.get(entry.id).restarts == 1 and queue.get(entry.id).pid not in (0, launcher), 180,
                 f"the restart\n{context()}")
        wait_for(lambda: not _alive(ranks[0]) and not _alive(launcher), 60, "the first group to be gone")
        wait_for(lambda: len(_attempts(run)) == 2 and max(_attempts(run)[1], default=0) >= max(_attempts(run)[0]) + 2,
                 180, f"the second group to train past the first\n{context()}")
        rd.send_request(stop=True)
        done = wait_for(lambda: queue.get(entry.id).state in ("cancelled", "failed", "done") and queue.get(entry.id),
                        120, f"the stop\n{context()}")
    finally:
        kill_workspace_processes(tw.ws.root)
    assert done.state == "cancelled" and done.message.startswith("stopped at step"), done

    first, second = _attempts(run)
    assert min(first) == 11 and min(second) == ckpt_step + 1, (sorted(first), sorted(second))
    redone = sorted(set(first) & set(second))
    assert len(redone) >= 3 and all(first[s] == second[s] for s in redone), redone  # bit for bit
    # Rank 0 says it lost a peer when it lives to write it; torchrun may end it first, and then the
    # supervisor's own failed status says how the group ended.
    errors = [e["message"] for e in events_of(run, "error")]
    lost = [m for m in errors if m.startswith("another rank of the group ended")]
    said = [e["message"] for e in events_of(run, "status") if e["state"] == "failed"]
    assert lost or said, (errors, said)
    answers = [e["request_id"] for e in events_of(run, "answer")]
    assert sorted(answers) == sorted(set(answers)) and mix_id in answers  # one answer each
    mix_events = events_of(run, "mix")
    assert len(mix_events) == 1 and mix_events[0]["step"] == mix["step"]

    # The same steps in one process, the mix put in its schedule at the step the two ranks applied it:
    # had a rank applied it a step late, its sequences (and so the losses) would differ from there.
    with EventWriter(ref / "events.jsonl") as w:
        w.write("mix", step=mix["step"], mix=mix["mix"], request_id=1)
    losses = {**first, **second}
    path = ref / "stage.toml"
    doc = tomllib.loads(path.read_text())
    doc["stage"]["max_steps"] = max(losses)
    path.write_text(tomli_w.dumps(doc))
    assert train_here(ref) == 0, log_tail(ref)
    diff = _max_diff(losses, {s: v for s, v in step_losses(ref).items() if s > 10})
    print(f"fsdp group (1->2 resume, mix at step {mix['step']}, rank 1 killed at {max(first)}, resumed from "
          f"step {ckpt_step}) against one process, steps 11-{max(losses)}: max loss difference {diff:.3g}")
    assert diff < TOL


# A rank other than 0 runs out of memory 8 attention calls in (the CUDA error, raised where torch's would be).
OOM_ON_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    import torch
    import torch.nn.functional as F
    real, calls = F.scaled_dot_product_attention, [0]
    def attention(*args, **kwargs):
        calls[0] += 1
        if calls[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (rank 1)")
        return real(*args, **kwargs)
    F.scaled_dot_product_attention = attention
"""


def test_out_of_memory_on_another_rank_fails_the_entry_with_why_and_no_restart(train_workspace, tmp_path,
                                                                               monkeypatch):
    from tests.queue_fixtures import kill_workspace_processes

    tw = _copy_workspace(train_workspace, tmp_path / "ws")
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(OOM_ON_RANK_1)
    monkeypatch.setenv("PYTHONPATH", str(inject))  # the supervisor, torchrun and the ranks inherit it
    monkeypatch.setenv("FCWORK_WORKSPACE", str(tw.ws.root))
    monkeypatch.setenv("FCWORK_TRAIN_THREADS", "1")
    run = make_run(tw, "short", grad_accum=2, devices=2, strategy="ddp", max_steps=40, checkpoint_every=10,
                   eval_every=0, max_restarts=2)
    queue = StageQueue(tw.ws)
    entry = queue.add("trainfx", "short")
    queue.update(entry.id, run_id=run.name)
    try:
        ensure_supervisor(tw.ws, idle_s=1.0)
        done = wait_for(lambda: queue.get(entry.id).state in ("failed", "done", "cancelled") and queue.get(entry.id),
                        240, f"the entry to end\n{log_tail(run, 40)}")
    finally:
        kill_workspace_processes(tw.ws.root)
    # Not a crash to retry: the stage does not fit rank 1's device, and the entry says so.
    assert done.state == "failed" and done.restarts == 0, done
    assert done.message.startswith("rank 1: out of memory at micro-batch 4: try micro_batch = 2"), done.message
    final = events_of(run, "status")[-1]
    assert final["state"] == "failed" and final["exit_code"] == 2 and final["message"] == done.message
    assert events_of(run, "error")[-1]["message"] == done.message
    assert RunDir(run).summary().state == "failed"
