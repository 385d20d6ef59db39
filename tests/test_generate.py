"""Generation: the samplers on plain logits, and the KV-cache path against recomputing the prefix."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ModelError
from engine.model.generate import (
    GREEDY,
    SamplingConfig,
    generate,
    generate_recompute,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from engine.model.decoder import Transformer
from engine.model.config import ModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CFG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=97, max_seq_len=48)
NEG = float("-inf")


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    m = Transformer(CFG).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_(6.0)  # sharp distributions, so greedy paths are not decided by rounding noise
    return m


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    assert top_k_filter(logits, 2).tolist() == [[NEG, 5.0, NEG, 4.0, NEG]]
    assert torch.equal(top_k_filter(logits, 0), logits) and torch.equal(top_k_filter(logits, 9), logits)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    kept = lambda p: (top_p_filter(logits, p) > NEG)[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.6) == [True, False, True, False]
    assert kept(0.8) == [True, False, True, False]
    assert kept(0.81) == [True, False, True, True]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]  # the most likely token always stays


def test_sample_next_greedy_temperature_and_cuts():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0], [4.0, 0.0, 0.0, 0.0]])
    assert sample_next(logits, GREEDY).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, SamplingConfig(temperature=1.0, top_k=2), g) for _ in range(300)])
    assert set(draws[:, 0].tolist()) == {1, 2}  # top-k 2 never draws the others
    hot = torch.stack([sample_next(logits, SamplingConfig(temperature=50.0), g) for _ in range(300)])
    assert len(set(hot[:, 1].tolist())) == 4  # a high temperature flattens the distribution
    cold = torch.stack([sample_next(logits, SamplingConfig(temperature=0.01), g) for _ in range(50)])
    assert set(cold[:, 0].tolist()) == {1}
    nucleus = torch.stack([sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.5), g) for _ in range(100)])
    assert set(nucleus[:, 1].tolist()) == {0}


@pytest.mark.parametrize("bad,msg", [
    (SamplingConfig(temperature=-1), r"temperature: expected a number >= 0, got -1"),
    (SamplingConfig(top_p=0.0), r"top_p: expected a number in \(0, 1\], got 0.0"),
    (SamplingConfig(top_k=-2), r"top_k: expected a non-negative integer, got -2"),
])
def test_bad_sampling_settings_are_one_line_errors(model, bad, msg):
    with pytest.raises(ModelError, match=msg):
        generate(model, [1, 2, 3], bad)


def test_cached_greedy_equals_recomputing_the_prefix(model):
    prompt = [5, 17, 42, 8, 3, 66, 12]
    cfg = SamplingConfig(max_new_tokens=30)
    cached = generate(model, prompt, cfg, stop_ids=())
    full = generate_recompute(model, prompt, cfg, stop_ids=())
    assert cached.tokens == full.tokens and len(cached.tokens) == 30 and cached.reason == "length"
    assert len(set(cached.tokens)) > 3  # not a degenerate constant output


def test_cached_sampling_equals_recompute_with_the_same_seed(model):
    cfg = SamplingConfig(max_new_tokens=25, temperature=0.9, top_k=20, top_p=0.9, seed=3)
    a = generate(model, [4, 9, 31], cfg, stop_ids=())
    b = generate_recompute(model, [4, 9, 31], cfg, stop_ids=())
    assert a.tokens == b.tokens
    assert generate(model, [4, 9, 31], cfg, stop_ids=()).tokens == a.tokens  # seeded: reproducible
    other = generate(model, [4, 9, 31], SamplingConfig(25, 0.9, 20, 0.9, seed=4), stop_ids=())
    assert other.tokens != a.tokens


def test_stops_at_a_stop_id_and_at_the_stop_callback(model):
    prompt = [7, 7, 21]
    free = generate(model, prompt, SamplingConfig(max_new_tokens=20), stop_ids=()).tokens
    stop_id = free[5]
    first = free.index(stop_id)
    ended = generate(model, prompt, SamplingConfig(max_new_tokens=20), stop_ids=(stop_id,))
    assert ended.tokens == free[:first] and ended.reason == "eos"
    called = generate(model, prompt, SamplingConfig(max_new_tokens=20), stop_ids=(), stop=lambda toks: len(toks) == 4)
    assert called.tokens == free[:4] and called.reason == "stop"


def test_long_prompts_are_cut_and_context_ends_generation(model):
    long_prompt = list(range(1, 90))  # longer than max_seq_len 48
    out = generate(model, long_prompt, SamplingConfig(max_new_tokens=10), stop_ids=())
    assert out.prompt_tokens == 38 and len(out.tokens) == 10
    assert out.tokens == generate(model, long_prompt[-38:], SamplingConfig(max_new_tokens=10), stop_ids=()).tokens
    many = generate(model, [3], SamplingConfig(max_new_tokens=100), stop_ids=())
    ref = generate_recompute(model, [3], SamplingConfig(max_new_tokens=100), stop_ids=())
    assert many.reason == ref.reason == "context" and many.tokens == ref.tokens and len(many.tokens) == 48
    assert generate(model, [3], SamplingConfig(max_new_tokens=0)).tokens == []
    with pytest.raises(ModelError, match="prompt: expected at least one token"):
        generate(model, [], GREEDY)


@given(st.lists(st.integers(0, 255), max_size=60))
def test_text_stream_pieces_add_up_to_the_decoded_text(byte_ids):
    """Ids as UTF-8 bytes (so characters split across tokens): the printed pieces never show half
    a character while more may come, and with the flush they are exactly the decoded text."""
    from engine.model.generate import TextStream

    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731
    stream = TextStream(decode)
    pieces = [stream.add(i) for i in byte_ids]
    assert all(not p.endswith("\ufffd") for p in pieces)
    assert "".join(pieces) + stream.flush() == decode(byte_ids)


def test_on_token_sees_each_kept_token_in_order(model):
    seen = []
    out = generate(model, [5, 6, 7], SamplingConfig(12, 0.9, 20, 0.9, 4), stop_ids=(3,), on_token=seen.append)
    assert seen == out.tokens and 3 not in seen


def test_chat_prompt_is_the_layout_the_chat_source_trains_on():
    import random

    from engine.data.builtin.chat import conversation
    from engine.data.chat_template import chat_prompt

    doc = conversation(random.Random(5))
    asked = chat_prompt("What is 2+2?")
    assert asked == "<|user|>\nWhat is 2+2?\n<|end|>\n<|assistant|>\n"
    assert doc.startswith(("<|system|>\n", "<|user|>\n")) and "\n<|end|>\n<|assistant|>\n" in doc
    assert chat_prompt("q", system="Be brief.") == "<|system|>\nBe brief.\n<|end|>\n" + chat_prompt("q")


def test_batched_generation_gives_each_prompt_its_own_tokens(model):
    """Prompts of different lengths generated together (left-padded, padding masked) give the tokens
    each gives alone: greedy, and sampled (row i seeded cfg.seed + i), with per-row stops and ends."""
    from engine.model.generate import generate_batch

    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (1, 7, 3, 20)]
    for cfg in (SamplingConfig(16), SamplingConfig(16, 0.9, 30, 0.9, 5)):
        stops = [None, lambda out: len(out) >= 5, None, lambda out: 11 in out]
        together = generate_batch(model, prompts, cfg, stop_ids=(2,), stops=stops)
        for i, (p, got) in enumerate(zip(prompts, together)):
            alone_cfg = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed + i)
            alone = generate(model, p, alone_cfg, stop_ids=(2,), stop=stops[i])
            assert (got.tokens, got.reason, got.prompt_tokens) == (alone.tokens, alone.reason, alone.prompt_tokens), i
    long = [list(range(3, 3 + CFG.max_seq_len + 5)), [4, 5]]  # cut from the left to fit, as alone
    for p, got in zip(long, generate_batch(model, long, SamplingConfig(8), stop_ids=())):
        assert got.tokens == generate(model, p, SamplingConfig(8), stop_ids=()).tokens
    assert generate_batch(model, [], SamplingConfig(4)) == []
