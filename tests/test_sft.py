"""Chat SFT with LoRA: the loss mask of the chat template, packing whole conversations, adapters
only in checkpoints, exact resume after SIGKILL, and the adapters in PEFT's layout checked in peft."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from hypothesis import given, settings, strategies as hs

from engine.data.chat_template import ASSISTANT, END, SYSTEM, USER, assistant_mask, last_state, render
from tests.sft_fixtures import base_run, make_sft_run, read_json, sft_workspace  # noqa: F401 (fixtures)
from tests.train_fixtures import events_of, kill, log_tail, start_trainer, step_losses, train_here, wait_for

A, E, S, U = 3, 4, 5, 6  # stand-in ids: assistant, end, system, user
ROLES = (S, U, A)


def test_mask_covers_assistant_turns_and_their_end():
    ids = np.array([S, 10, E, 11, U, 12, 13, E, 11, A, 14, 15, E, 11, U, 16, E, 11, A, 17, E, 11, 2])
    want = [0] * 10 + [1, 1, 1] + [0] * 6 + [1, 1] + [0, 0]
    assert assistant_mask(ids, A, E, ROLES).astype(int).tolist() == want
    assert assistant_mask(np.array([20, 21, 2]), A, E, ROLES).all()  # not a conversation: all learnt
    cut = ids[:11]
    assert last_state(cut, A, E, ROLES) and assistant_mask(ids[11:15], A, E, ROLES, inside=True).tolist() == [1, 1, 0, 0]


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(hs.sampled_from(["system", "user", "assistant"]), hs.integers(0, 3)), min_size=1, max_size=6),
       hs.integers(0, 30))
def test_mask_of_a_cut_matches_the_whole(turns, cut):
    """A conversation cut anywhere (a long one split over rows) masks its tail as the whole does."""
    sym = {"system": S, "user": U, "assistant": A}
    ids = []
    for role, n in turns:
        ids += [sym[role], *range(20, 20 + n), E, 11]
    ids = np.array(ids)
    cut = min(cut, len(ids) - 1)
    whole = assistant_mask(ids, A, E, ROLES)
    inside = last_state(ids[:cut], A, E, ROLES)
    part = assistant_mask(ids[cut:], A, E, ROLES, inside=inside)
    if inside or np.isin(ids[cut:], ROLES).any():
        assert part.tolist() == whole[cut:].tolist()


def test_render_matches_the_exports_jinja():
    from jinja2 import Template

    from engine.data.chat_template import JINJA

    msgs = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "2+2?")]
    sym = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
    ours = render([(sym[r], t) for r, t in msgs], add_generation_prompt=True)
    theirs = Template(JINJA).render(messages=[{"role": r, "content": t} for r, t in msgs], add_generation_prompt=True)
    assert ours == theirs and ours.endswith(f"{END}\n{ASSISTANT}\n")


def test_packed_rows_keep_conversations_whole(sft_workspace):
    from engine.data.sampler import MixSchedule, Sampler
    from engine.data.shards import open_shard
    from engine.data.tokenizer import Tokenizer
    from engine.train.trainer import chat_ids

    tw = sft_workspace
    tok = Tokenizer.load(tw.tokenizer_path)
    chat = chat_ids(tok)
    shard = open_shard(tw.ws.tok_dir(tw.profile.name) / "chat", tok.hash)
    sampler = Sampler({"chat": shard}, 32, 7, MixSchedule.constant({"chat": 1.0}))
    tokens, mask, dom = sampler.packed_batch(0, 100, 16, chat)
    again = sampler.packed_batch(0, 100, 16, chat)
    assert np.array_equal(tokens, again[0]) and np.array_equal(mask, again[1])
    docs = {tuple(shard.tokens[int(a):int(b)].tolist()) for a, b in zip(shard.doc_starts[:-1], shard.doc_starts[1:])}
    for row, m in zip(tokens, mask):
        ends = np.flatnonzero(row == tok.eos_id)
        pieces = np.split(row, ends + 1)
        body = [p for p in pieces if p.size and not (p == tok.eos_id).all()]
        assert all(tuple(p.tolist()) in docs for p in body[:-1] if p[-1] == tok.eos_id)  # whole documents
        learnt = row[m]
        assert chat.end_id in learnt.tolist() or not m.any() or m[-1]  # a turn ends, or the row cuts it
        assert chat.assistant_id not in learnt.tolist() and chat.role_ids[1] not in learnt.tolist()


@pytest.fixture(scope="module")
def lora_run(sft_workspace, base_run):
    run = make_sft_run(sft_workspace, base_run)
    assert train_here(run) == 0, log_tail(run)
    return run


def test_lora_sft_trains_adapters_only_and_resumes_exactly(sft_workspace, base_run, lora_run):
    from safetensors.torch import load_file

    reference = lora_run
    steps = events_of(reference, "step")
    assert all(0 < e["loss_share"] < 1 for e in steps)
    ckpt = reference / "ckpt" / "step-12"
    saved = load_file(str(ckpt / "model.safetensors"))
    assert saved and all(k.endswith((".lora_A", ".lora_B")) for k in saved)
    assert len(saved) == 2 * 2 * 5  # 2 layers x 5 targets x (A, B)
    state = read_json(ckpt / "state.json")
    assert state["lora"]["rank"] == 4 and state["trainable_params"] < state["params"] / 5
    assert state["optim_bytes"] <= 2 * 4 * state["trainable_params"] + 64 * len(saved)
    assert any(float(saved[k].abs().max()) > 0 for k in saved if k.endswith("lora_B"))

    run = make_sft_run(sft_workspace, base_run)
    proc = start_trainer(run)
    wait_for(lambda: max(step_losses(run), default=0) >= 5, 90, "step 5")
    kill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert train_here(run) == 0, log_tail(run)
    assert step_losses(run) == step_losses(reference)
    mine = load_file(str(run / "ckpt" / "step-12" / "model.safetensors"))
    import torch

    assert all(torch.equal(mine[k], saved[k]) for k in saved)


def test_adapters_load_in_peft_on_our_hf_export_and_merge_for_export(base_run, lora_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer, LlamaForCausalLM

    from engine.eval.run_model import find_checkpoint, load_model
    from engine.export import ExportError, export_adapters, export_run

    base_hf = export_run(base_run, "hf", out=tmp_path / "base").path
    adapters = export_adapters(lora_run, out=tmp_path / "adapters").path
    merged_hf = export_run(lora_run, "hf", out=tmp_path / "merged").path
    config = read_json(adapters / "adapter_config.json")
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["down_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    ours = load_model(find_checkpoint(lora_run))
    ids = torch.tensor([[2, 5, 9, 30, 41, 7, 3, 99, 120, 6]])
    with torch.no_grad():
        want = ours(ids)
        peft = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_hf), adapters).eval()
        got = peft(input_ids=ids).logits
        merged = LlamaForCausalLM.from_pretrained(merged_hf).eval()(input_ids=ids).logits
        plain = LlamaForCausalLM.from_pretrained(base_hf).eval()(input_ids=ids).logits
    assert (got - want).abs().max() < 1e-5
    assert (merged - want).abs().max() < 1e-5
    assert (plain - want).abs().max() > 1e-4  # the adapters do change the model
    tok = AutoTokenizer.from_pretrained(merged_hf)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nhi\n<|end|>\n<|assistant|>\n"
    with pytest.raises(ExportError, match="no lora_rank"):
        export_adapters(base_run, out=tmp_path / "none")

    from fcwork.cli import main

    ws = str(lora_run.parent.parent)
    assert main(["--workspace", ws, "export", lora_run.name, "--adapters-only", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "adapter_model.safetensors").exists()
    assert main(["--workspace", ws, "export", lora_run.name]) == 2


def test_chat_probe_checks_answers_in_their_clients():
    from engine.eval.probes import chat

    items = chat.build_items([], 6, seed=0)
    assert [i.kind for i in items] == ["chess", "code", "table"] * 2
    assert items == chat.build_items([], 6, seed=0)
    for item in items:  # the reference answer passes, a wrong one does not, a missing <|end|> is seen
        assert chat.check(item, f"{item.answer}\n{END}") == {"answer": item.answer, "end": True, "correct": True}
        assert not chat.check(item, "Zz9 nonsense")["correct"]
        assert not chat.check(item, item.answer)["end"]
        assert not chat.check(item, END)["end"]  # an empty turn is no answer
    assert chat.run_snippet("import socket; socket.create_connection(('example.com', 80))") is None
    assert chat.run_snippet("while True: pass", timeout=0.5) is None


def test_runs_show_says_what_a_lora_run_trains(lora_run, capsys):
    from fcwork.cli import main

    assert main(["--workspace", str(lora_run.parent.parent), "runs", "show", lora_run.name]) == 0
    out = " ".join(capsys.readouterr().out.split())
    state = read_json(lora_run / "ckpt" / "step-12" / "state.json")
    assert f"trainable parameters: {state['trainable_params']:,} of {state['params']:,}" in out
    assert "optimizer state" in out and "LoRA: rank 4, alpha 8.0, dropout 0.1 on q, v, o, up, down" in out
    assert "loss on assistant turns only" in out


def test_a_live_mix_edit_applies_in_an_sft_stage(sft_workspace, base_run):
    from engine.jobs.rundir import RunDir

    run = make_sft_run(sft_workspace, base_run, max_steps=3, checkpoint_every=3, warmup_steps=1)
    RunDir(run).send_request(mix={"chat": 1.0, "code": 0.0})
    assert train_here(run) == 0, log_tail(run)
    (answer,) = events_of(run, "answer")
    assert answer["outcome"] == "applied" and answer["step"] == 1
    assert events_of(run, "step")[-1]["mix"]["code"] == 0.0
