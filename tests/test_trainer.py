"""The trainer subprocess end to end on a tiny CPU model: events, checkpoints, held-out eval, exit
codes, init_from; plus the learning-rate schedules and the device table as plain functions."""

from __future__ import annotations

import json
import math
import shutil
from engine.compat import tomllib
from pathlib import Path

import pytest
import tomli_w

from engine.profile import StageConfig
from engine.train.lr_schedule import lr_at
from tests.train_fixtures import TRAIN_DOMAINS, events_of, log_tail, make_run, train_here


@pytest.fixture(scope="module")
def finished_run(train_workspace):
    """One short run trained to the end (shared by the read-only tests below). In this process, to
    spare torch's start-up; test_resume and test_control run `python -m engine.train` for real."""
    run = make_run(train_workspace, "short", max_steps=12, checkpoint_every=5, eval_every=6, keep_checkpoints=2)
    rc = train_here(run)
    assert rc == 0, log_tail(run)
    return run


def test_run_reports_status_steps_evals_and_checkpoints(finished_run):
    events = events_of(finished_run)
    statuses = [e["state"] for e in events if e["type"] == "status"]
    assert statuses == ["starting", "running", "finished"]
    final = [e for e in events if e["type"] == "status"][-1]
    assert final["step"] == 12 and final["max_steps"] == 12 and final["device"] == "cpu" and final["pid"] > 0
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 13))
    first, last = steps[0], steps[-1]
    for key in ("tokens", "loss", "domain_loss", "lr", "grad_norm", "tokens_per_s", "step_time", "mem_bytes", "mix"):
        assert key in first, key
    assert "mfu" not in first  # MFU only where the device's peak is known (CUDA)
    assert first["tokens"] == 4 * 2 * 32 and last["tokens"] == 12 * 4 * 2 * 32
    assert math.isclose(first["loss"], math.log(400), rel_tol=0.1)  # untrained: about ln(vocab)
    assert last["loss"] < first["loss"] - 0.3
    assert set(first["domain_loss"]) <= set(TRAIN_DOMAINS) and first["domain_loss"]
    assert list(first["mix"]) == TRAIN_DOMAINS and math.isclose(first["mix"]["code"], 0.5)
    assert first["mem_bytes"] > 10_000_000 and first["tokens_per_s"] > 0
    # Warmup over 4 steps, then cosine down to min_lr_ratio * lr at the last step.
    assert math.isclose(first["lr"], 3e-3 / 4) and math.isclose(last["lr"], 3e-4)
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [6, 12]
    assert set(evals[0]["domain_loss"]) == set(TRAIN_DOMAINS)
    assert set(evals[0]["domain_bpb"]) == set(TRAIN_DOMAINS)
    assert evals[1]["loss"] < evals[0]["loss"]
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [5, 10, 12]


def test_each_eval_runs_the_probes_into_evals_jsonl(finished_run):
    """eval_probes (on by default): every eval also runs the harness on the weights in memory; its
    record lands in evals.jsonl (no checkpoint fields) and its probe scores ride on the eval event."""
    from engine.eval.harness import EvalLimits, read_evals

    evals = events_of(finished_run, "eval")
    recs = read_evals(finished_run)
    assert [r["step"] for r in recs] == [6, 12]
    quick = EvalLimits.during_training()
    for ev, rec in zip(evals, recs):
        assert rec["checkpoint"] == "" and rec["checkpoint_sha256"] == "" and rec["device"] == "cpu"
        assert rec["limits"]["chess"] == quick.chess and rec["limits"]["sample_tokens"] == quick.sample_tokens
        probes = rec["metrics"]["probes"]
        assert set(probes) == {"chess", "code", "science"}  # no held-out "data" domain in this workspace
        assert probes["chess"]["n"] > 0 and 0 <= probes["chess"]["legal"] <= 1
        assert set(rec["samples"]) == set(TRAIN_DOMAINS)
        assert ev["probes"] == {k: {m: v for m, v in p.items() if m != "n"} for k, p in probes.items()}
        assert math.isclose(ev["bpb"], rec["metrics"]["bpb"]) and ev["probe_seconds"] > 0
        assert "probe_error" not in ev


def test_eval_probes_off_keeps_evals_jsonl_empty(train_workspace):
    run = make_run(train_workspace, "short", max_steps=4, warmup_steps=1, checkpoint_every=4, eval_every=2,
                   eval_probes=False)
    assert train_here(run) == 0, log_tail(run)
    evals = events_of(run, "eval")
    assert [e["step"] for e in evals] == [2, 4] and all("probes" not in e for e in evals)
    assert not (run / "evals.jsonl").exists()


def test_checkpoints_are_complete_kept_and_safe_to_load(finished_run):
    import torch
    from safetensors.torch import load_file

    ckpt = finished_run / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-10", "step-12"]  # keep_checkpoints = 2
    final = ckpt / "step-12"
    state = json.loads((final / "state.json").read_text())
    assert state["step"] == 12 and state["tokens"] == 12 * 256
    assert state["sequence_cursor"] == 12 * 2 * 4
    assert sum(state["tokens_drawn"].values()) == 12 * 8 * 33
    assert state["mix_schedule"] and state["last_request_id"] == 0
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    assert state["lr_schedule"]["schedule"] == "cosine"
    weights = load_file(str(final / "model.safetensors"))
    assert "embed.weight" in weights and weights["embed.weight"].shape == (400, 32)
    optim = torch.load(final / "optim.pt", weights_only=True)
    assert optim and all(isinstance(v, torch.Tensor) for v in optim.values())
    assert {k.split(".", 1)[1] for k in optim} == {"step", "exp_avg", "exp_avg_sq"}


def test_log_every_thins_step_events_but_keeps_the_last(train_workspace):
    run = make_run(train_workspace, "short", max_steps=7, log_every=3, eval_every=0, checkpoint_every=100)
    assert train_here(run) == 0, log_tail(run)
    steps = events_of(run, "step")
    assert [e["step"] for e in steps] == [3, 6, 7]
    assert math.isclose(steps[1]["step_time"] * 3 * steps[1]["tokens_per_s"], 3 * 256, rel_tol=1e-3)
    assert [e["step"] for e in events_of(run, "checkpoint")] == [7]


def test_a_bad_stage_toml_is_a_user_error(train_workspace):
    run = make_run(train_workspace, "short")
    path = run / "stage.toml"
    doc = tomllib.loads(path.read_text())
    doc["stage"]["lr"] = "fast"
    path.write_text(tomli_w.dumps(doc))
    assert train_here(run) == 2
    errors = events_of(run, "error")
    assert len(errors) == 1 and errors[0]["source"] == "trainer"
    assert errors[0]["message"] == f'{path}: stage.lr: expected a positive number, got "fast"'
    assert events_of(run, "status")[-1]["state"] == "failed"
    assert not events_of(run, "step")


def test_missing_shards_are_a_user_error(train_workspace, tmp_path):
    run = make_run(train_workspace, "short")
    path = run / "stage.toml"
    doc = tomllib.loads(path.read_text())
    doc["paths"]["shards"] = str(tmp_path / "gone")
    path.write_text(tomli_w.dumps(doc))
    assert train_here(run) == 2
    message = events_of(run, "error")[-1]["message"]
    assert message.startswith(str(tmp_path / "gone" / "code.bin")) and "no shard for domain 'code'" in message


def test_a_crash_exits_1_with_the_traceback_in_the_log(train_workspace):
    run = make_run(train_workspace, "short", max_steps=6, checkpoint_every=2, eval_every=0)
    (run / "ckpt").write_text("a file where the checkpoint folder should be")
    assert train_here(run) == 1
    error = events_of(run, "error")[-1]
    assert error["source"] == "trainer" and error["message"].startswith(("FileExistsError", "NotADirectoryError"))
    assert events_of(run, "status")[-1]["state"] == "failed"
    assert "Traceback (most recent call last)" in (run / "trainer.log").read_text()


def test_init_from_loads_the_earlier_stage(train_workspace, finished_run):
    from engine.jobs.runs import create_run

    # finished_run is a finished "short" run: "follow" starts from its final weights.
    run = create_run(train_workspace.ws, train_workspace.profile, "follow")
    init = Path(tomllib.loads((run / "stage.toml").read_text())["paths"]["init_from"])
    source = init.parent.parent
    assert events_of(source, "status")[-1]["state"] == "finished"
    assert init.name == f"step-{events_of(source, 'status')[-1]['step']}"
    assert train_here(run) == 0, log_tail(run)
    running = events_of(run, "status")[1]
    assert running["state"] == "running" and running["message"] == f"initialised from {init}"
    first_follow = events_of(run, "step")[0]["loss"]
    # Step 1 of both runs trains on the same batch (same seed and mix): the trained weights do better.
    assert first_follow < events_of(source, "step")[0]["loss"] - 0.1


def test_init_from_refuses_another_tokenizer_or_shape(train_workspace, finished_run, tmp_path):
    from engine.jobs.runs import create_run

    init = tmp_path / "init"
    shutil.copytree(finished_run / "ckpt" / "step-12", init)
    state = json.loads((init / "state.json").read_text())
    state["tokenizer_hash"] = "0" * 64
    (init / "state.json").write_text(json.dumps(state))
    run = create_run(train_workspace.ws, train_workspace.profile, "follow")
    path = run / "stage.toml"
    doc = tomllib.loads(path.read_text())
    doc["paths"]["init_from"] = str(init)
    path.write_text(tomli_w.dumps(doc))
    assert train_here(run) == 2
    assert "init_from checkpoint was trained with tokenizer 000000000000" in events_of(run, "error")[-1]["message"]
    assert not events_of(run, "step")

    doc["paths"]["init_from"] = str(finished_run / "ckpt" / "step-12")
    doc["stage"]["model"]["ffn_dim"] = 96
    run2 = create_run(train_workspace.ws, train_workspace.profile, "follow")
    (run2 / "stage.toml").write_text(tomli_w.dumps(doc))
    assert train_here(run2) == 2
    message = events_of(run2, "error")[-1]["message"]
    assert "gate_proj.weight: shape [64, 32] does not match the model's [96, 32]" in message
    assert not events_of(run2, "step")


# -- plain functions ---------------------------------------------------------------------------

def _stage(**kw) -> StageConfig:
    base = dict(name="s", max_steps=100, lr=1.0, min_lr_ratio=0.1, warmup_steps=10)
    base.update(kw)
    return StageConfig(**base)


def test_lr_schedules():
    cos = _stage(schedule="cosine")
    assert [lr_at(s, cos) for s in (1, 5, 10)] == [0.1, 0.5, 1.0]
    assert math.isclose(lr_at(55, cos), 0.1 + 0.9 * 0.5)
    assert math.isclose(lr_at(100, cos), 0.1)
    assert all(lr_at(s, cos) >= lr_at(s + 1, cos) for s in range(10, 100))
    wsd = _stage(schedule="wsd", decay_fraction=0.2)
    assert lr_at(50, wsd) == 1.0 and lr_at(80, wsd) == 1.0
    assert math.isclose(lr_at(90, wsd), 0.55) and math.isclose(lr_at(100, wsd), 0.1)
    const = _stage(schedule="constant")
    assert lr_at(5, const) == 0.5 and lr_at(100, const) == 1.0
    assert lr_at(1, _stage(warmup_steps=0, schedule="constant")) == 1.0


def test_peak_flops_table_and_device_choice():
    from engine.errors import RunError
    from engine.train.device import peak_flops, pick_device

    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA H200", "bf16") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12
    assert peak_flops("NVIDIA L4", "bf16") == 121e12
    assert peak_flops("NVIDIA L40S", "bf16") == 362e12
    assert peak_flops("NVIDIA GeForce RTX 4090", "bf16") == 165.2e12
    assert peak_flops("Tesla V100-SXM2-16GB", "bf16") is None
    assert peak_flops("Some Future GPU", "bf16") is None
    import torch

    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        dev = pick_device("auto", "auto")
        assert (dev.name, dev.precision, dev.peak_flops) == ("cpu", "fp32", None)
        with pytest.raises(RunError, match='device: expected a device this machine has, got "cuda"'):
            pick_device("cuda", "auto", origin="stage")
        with pytest.raises(RunError, match=r'^stage.precision: "fp8" needs a CUDA GPU \(Ada or Hopper\); use "bf16" here$'):
            pick_device("cpu", "fp8", origin="stage")


def test_fp8_needs_a_recent_gpu_and_leaves_the_lm_head_in_bf16():
    from torch import nn

    from engine.errors import RunError
    from engine.train.fp8 import _wanted, check_fp8

    with pytest.raises(RunError, match=r'compute capability 8.9 or newer, this one is 8.0; use "bf16"$'):
        check_fp8((8, 0), "stage")
    assert _wanted(nn.Linear(1024, 2752), "layers.0.mlp.up_proj")
    assert not _wanted(nn.Linear(1024, 50000 + 8), "lm_head")
    assert not _wanted(nn.Linear(768, 768), "vision.encoder.layers.0.self_attn.q_proj")
    assert not _wanted(nn.Linear(768, 1024), "projector.linear_1")
    assert not _wanted(nn.Linear(1000, 1024), "layers.0.attn.q_proj")  # float8 GEMMs need multiples of 16


def test_checkpoint_round_trip_with_tied_embeddings(tmp_path):
    import torch

    from engine.model.decoder import Transformer
    from engine.model.config import ModelConfig
    from engine.train import checkpoint as ckpt

    cfg = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32, vocab_size=50, max_seq_len=16,
                      tie_embeddings=True)
    torch.manual_seed(0)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 50, (2, 9))
    model.loss(x[:, :-1], x[:, 1:]).backward()
    opt.step()
    where = ckpt.save_checkpoint(tmp_path / "ckpt", 1, model, opt, {"step": 1}, keep=1)
    assert "lm_head.weight" not in ckpt.model_tensors(model)  # the shared tensor is stored once
    torch.manual_seed(1)
    other = Transformer(cfg)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    ckpt.load_weights(where, other)
    ckpt.load_optimizer(where, other_opt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert other.lm_head.weight is other.embed.weight
    mine, theirs = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[i][k], theirs[i][k]) for i in mine for k in mine[i])
    assert ckpt.read_state(where) == {"step": 1}
