"""The decoder: shapes, causality, GQA, tying, loss, checkpointing, KV cache, parameter accounting,
and logits equal to transformers' LlamaForCausalLM loaded with our weights."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from engine.errors import ModelError
from engine.model.hf_names import hf_config_dict, hf_to_state_dict, state_dict_to_hf
from engine.model.decoder import KVCache, Transformer
from engine.model.config import PRESETS, ModelConfig
from engine.model.info import memory_estimate, param_breakdown, vision_params
from tests.conftest import REPO

SMALL = ModelConfig(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=160, vocab_size=300, max_seq_len=64)


def make(cfg: ModelConfig, seed: int = 0, spread: float = 0.0) -> Transformer:
    """A model with fixed weights; `spread` also randomises the norm weights so a swapped norm shows."""
    torch.manual_seed(seed)
    model = Transformer(cfg)
    if spread:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.add_(spread * torch.randn_like(p))
    return model


def tokens(cfg: ModelConfig, batch: int = 2, length: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (batch, length), generator=g)


def test_logits_shape_and_dtype():
    cfg = PRESETS["tiny"].with_vocab(500)
    out = make(cfg)(tokens(cfg, 3, 17))
    assert out.shape == (3, 17, 500) and out.dtype == torch.float32


def test_vocab_zero_and_bad_shape_are_one_line_errors():
    with pytest.raises(ModelError, match=r"model\.vocab_size: expected a positive integer .* got 0"):
        Transformer(PRESETS["tiny"])
    with pytest.raises(ModelError, match=r"model\.n_kv_heads: expected a divisor of n_heads \(8\), got 3"):
        Transformer(ModelConfig(dim=64, n_heads=8, n_kv_heads=3, vocab_size=10))


def test_too_long_sequence_is_refused():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, vocab_size=50, max_seq_len=8)
    with pytest.raises(ModelError, match=r"tokens: expected at most 8 positions \(max_seq_len\), got 9"):
        make(cfg)(torch.zeros(1, 9, dtype=torch.long))


def test_causal_masking_future_token_does_not_change_earlier_logits():
    cfg = SMALL
    model = make(cfg).eval()
    x = tokens(cfg, 2, 20)
    y = x.clone()
    y[:, 12] = (y[:, 12] + 7) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :12], b[:, :12])
    assert (a[:, 12:] - b[:, 12:]).abs().max() > 1e-4


def _reference_attention(attn, x, cos, sin):
    """Grouped-query attention written out: k/v heads repeated, explicit causal softmax."""
    from engine.model.decoder import apply_rope

    B, T, _ = x.shape
    q = apply_rope(attn.q_proj(x).view(B, T, attn.n_heads, -1), cos, sin).transpose(1, 2)
    k = apply_rope(attn.k_proj(x).view(B, T, attn.n_kv_heads, -1), cos, sin).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, attn.n_kv_heads, -1).transpose(1, 2)
    rep = attn.n_heads // attn.n_kv_heads
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    out = scores.softmax(-1) @ v
    return attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))


@pytest.mark.parametrize("n_kv_heads", [1, 2, 8])
def test_grouped_query_attention_matches_repeated_heads(n_kv_heads):
    cfg = ModelConfig(dim=64, n_layers=1, n_heads=8, n_kv_heads=n_kv_heads, ffn_dim=96, vocab_size=50, max_seq_len=32)
    model = make(cfg)
    attn = model.layers[0].attn
    assert attn.k_proj.weight.shape == (n_kv_heads * 8, 64)
    x = torch.randn(2, 16, 64)
    cos, sin = model.rope_cos[:16], model.rope_sin[:16]
    with torch.no_grad():
        torch.testing.assert_close(attn(x, cos, sin), _reference_attention(attn, x, cos, sin), atol=1e-5, rtol=1e-5)


def test_tied_embeddings_share_one_tensor():
    cfg = SMALL
    tied = make(ModelConfig(**{**cfg.__dict__, "tie_embeddings": True}))
    untied = make(cfg)
    assert tied.lm_head.weight is tied.embed.weight
    assert untied.num_params() - tied.num_params() == cfg.vocab_size * cfg.dim
    hf = state_dict_to_hf(tied.state_dict())
    assert "lm_head.weight" not in hf and "model.embed_tokens.weight" in hf
    back = hf_to_state_dict(hf)
    assert back["lm_head.weight"] is back["embed.weight"]


def test_loss_none_equals_manual_cross_entropy():
    cfg = SMALL
    model = make(cfg)
    x = tokens(cfg, 3, 20)
    inputs, targets = x[:, :-1], x[:, 1:].clone()
    targets[0, 3] = -100
    per_token = model.loss(inputs, targets, reduction="none")
    assert per_token.shape == targets.shape and per_token.dtype == torch.float32
    logp = torch.log_softmax(model(inputs).double(), dim=-1)
    manual = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    manual[0, 3] = 0.0
    torch.testing.assert_close(per_token.double(), manual, atol=1e-5, rtol=1e-5)
    mean = model.loss(inputs, targets)
    torch.testing.assert_close(mean, per_token.sum() / (targets != -100).sum(), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        model.loss(inputs, targets, reduction="sum")


def test_cross_entropy_gradient_equals_torch_and_gradcheck():
    from engine.model.decoder import _CrossEntropy, cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(12, 40, requires_grad=True)
    targets = torch.randint(0, 40, (12,))
    targets[[2, 7]] = -100
    weights = torch.rand(12)
    ours = torch.autograd.grad((cross_entropy(logits, targets) * weights).sum(), logits)[0]
    ref = torch.autograd.grad((F.cross_entropy(logits, targets, reduction="none") * weights).sum(), logits)[0]
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    assert ours[2].abs().max() == 0
    half = logits.detach().bfloat16().requires_grad_()
    loss = cross_entropy(half, targets)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(half.float(), targets, reduction="none"))
    (grad,) = torch.autograd.grad(loss.sum(), half)
    assert grad.dtype == torch.bfloat16
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_CrossEntropy.apply, (x, torch.tensor([0, 6, -100, 3, 3])))


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = SMALL
    model = make(cfg)
    x = tokens(cfg, 2, 32)
    grads = []
    for on in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_activation_checkpointing(on)
        model.loss(x[:, :-1], x[:, 1:]).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_initialisation_scales_output_projections():
    cfg = ModelConfig(dim=256, n_layers=8, n_heads=4, n_kv_heads=4, ffn_dim=512, vocab_size=1000, init_std=0.02)
    model = make(cfg)
    block = model.layers[0]
    assert abs(block.attn.q_proj.weight.std().item() - 0.02) < 0.002
    assert abs(model.embed.weight.std().item() - 0.02) < 0.002
    for w in (block.attn.o_proj.weight, block.mlp.down_proj.weight):
        assert abs(w.std().item() - 0.02 / 4) < 0.0005
    assert torch.equal(block.attn_norm.weight, torch.ones(256))


def test_kv_cache_decoding_matches_full_forward():
    cfg = SMALL
    model = make(cfg, spread=0.1).eval()
    x = tokens(cfg, 2, 20)
    with torch.no_grad():
        full = model(x)
        cache = KVCache.empty(cfg, batch=2, max_len=32)
        steps = [model(x[:, :8], cache, 0), model(x[:, 8:13], cache, 8)]  # prefill, then a chunk
        steps += [model(x[:, i : i + 1], cache, i) for i in range(13, 20)]  # one token at a time
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="expected at most 32 positions"):
        model(x[:, :1], cache, 32)
    with torch.no_grad():
        last = model(x[:, :8], KVCache.empty(cfg, batch=2, max_len=32), 0, last_only=True)
    assert last.shape == (2, 1, cfg.vocab_size)
    torch.testing.assert_close(last, full[:, 7:8], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vocab", [8000, 50000])
@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("tied", [False, True])
def test_param_breakdown_equals_real_model(name, vocab, tied):
    cfg = ModelConfig(**{**PRESETS[name].with_vocab(vocab).__dict__, "tie_embeddings": tied})
    with torch.device("meta"):
        model = Transformer(cfg)
    counts = param_breakdown(cfg)
    assert counts["decoder"] == model.num_params() == sum(p.numel() for p in model.parameters())
    assert counts["decoder"] == sum(counts[k] for k in ("embedding", "attention", "mlp", "norms", "lm_head"))
    assert counts["total"] == counts["decoder"] + counts["vision_tower"] + counts["projector"]
    named = dict(model.named_parameters())
    assert counts["embedding"] == named["embed.weight"].numel()
    assert counts["norms"] == sum(p.numel() for n, p in named.items() if n.endswith("norm.weight"))


def test_meta_model_materialises_with_reset_parameters():
    cfg = SMALL
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.reset_parameters()
    reference = make(cfg)
    assert torch.equal(model.rope_cos, reference.rope_cos) and torch.equal(model.rope_sin, reference.rope_sin)
    assert torch.equal(model.norm.weight, torch.ones(cfg.dim))
    assert abs(model.embed.weight.std().item() - cfg.init_std) < 0.002
    assert torch.isfinite(model(tokens(cfg))).all()


def test_fc450_is_450m_with_a_vit_b16_tower():
    cfg = PRESETS["fc450"].with_vocab(50000)
    assert vision_params(cfg)["vision_tower"] == 85_797_120  # SigLIP ViT-B/16 at 224 px, no class token, no head
    assert vision_params(cfg)["projector"] == 1_837_056 and cfg.image_tokens == 196
    assert abs(param_breakdown(cfg)["total"] / 450e6 - 1) < 0.03
    stage0 = PRESETS["stage0"]
    assert (stage0.n_layers, stage0.dim) == (4, 1024)


def test_memory_estimate_parts_and_checkpointing():
    cfg = PRESETS["fc450"].with_vocab(50000)
    plain = memory_estimate(cfg, 2048, 1, False, "bf16", "cuda")
    ckpt = memory_estimate(cfg, 2048, 1, True, "bf16", "cuda")
    p = param_breakdown(cfg)["decoder"]
    assert plain["weights"] == plain["grads"] == 4 * p and plain["optimizer"] == 8 * p
    forward = sum(plain[k] for k in ("cast_weights", "activations", "logits"))
    assert plain["total"] == plain["weights"] + plain["optimizer"] + max(plain["grads"], forward)
    # Accumulating, the gradients of the step's first micro-batches are there during the next forward.
    accumulating = memory_estimate(cfg, 2048, 1, False, "bf16", "cuda", grad_accum=48)
    assert accumulating["total"] == plain["weights"] + plain["optimizer"] + plain["grads"] + forward
    assert ckpt["activations"] * 5 < plain["activations"]
    assert memory_estimate(cfg, 2048, 2, False, "bf16", "cuda")["activations"] > 1.9 * plain["activations"]
    assert memory_estimate(cfg, 2048, 1, False, "fp32", "cuda")["activations"] > plain["activations"]
    assert memory_estimate(cfg, 2048, 1, False, "bf16", "mps")["activations"] > plain["activations"]
    assert memory_estimate(cfg, 2048, 1, False, "auto", "cpu")["precision"] == "fp32"
    with_vision = memory_estimate(cfg, 2048, 1, True, "bf16", "cuda", include_vision=True)
    assert with_vision["params"] == p + vision_params(cfg)["total"]
    for kwargs, message in (
        ({"seq_len": 4096}, r"seq_len: expected at most the model's max_seq_len \(2048\), got 4096"),
        ({"micro_batch": 0}, "micro_batch: expected a positive integer, got 0"),
        ({"grad_accum": 0}, "grad_accum: expected a positive integer, got 0"),
        ({"device": "tpu"}, "device: expected 'auto', 'cpu', 'cuda' or 'mps', got 'tpu'"),
        ({"precision": "fp16"}, "precision: expected 'auto', 'fp32', 'bf16' or 'fp8', got 'fp16'"),
    ):
        args = {"seq_len": 2048, "micro_batch": 1, "device": "cuda", "precision": "auto", **kwargs}
        with pytest.raises(ModelError, match=message):
            memory_estimate(cfg, **args)


def test_hf_name_map_round_trips_and_refuses_unknown_names():
    model = make(SMALL)
    sd = model.state_dict()
    hf = state_dict_to_hf(sd)
    assert len(hf) == len(sd) and "model.layers.1.self_attn.k_proj.weight" in hf
    assert "model.layers.0.post_attention_layernorm.weight" in hf and "model.norm.weight" in hf
    back = hf_to_state_dict(hf)
    assert set(back) == set(sd) and all(back[k] is sd[k] for k in sd)
    with pytest.raises(ModelError, match=r"our state dict: unknown parameter name 'layers.0.attn.qkv.weight'"):
        state_dict_to_hf({"layers.0.attn.qkv.weight": torch.zeros(1)})


def _hf_model(cfg: ModelConfig, attn: str):
    transformers = pytest.importorskip("transformers")
    hcfg = transformers.LlamaConfig(**hf_config_dict(cfg), attn_implementation=attn)
    assert hcfg.rope_parameters["rope_theta"] == cfg.rope_theta
    return transformers.LlamaForCausalLM(hcfg).eval()


@pytest.mark.parametrize(
    "cfg",
    [
        PRESETS["tiny"].with_vocab(8000),
        ModelConfig(**{**SMALL.__dict__, "rope_theta": 500000.0, "norm_eps": 1e-6}),
        ModelConfig(**{**SMALL.__dict__, "tie_embeddings": True}),
    ],
    ids=["tiny", "small-gqa-untied", "small-gqa-tied"],
)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_match_transformers_llama(cfg, attn):
    ours = make(cfg, spread=0.2).eval()
    hf = _hf_model(cfg, attn)
    result = hf.load_state_dict(state_dict_to_hf(ours.state_dict()), strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) == ({"lm_head.weight"} if cfg.tie_embeddings else set())
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == cfg.tie_embeddings
    x = tokens(cfg, 2, 48, seed=7)
    with torch.no_grad():
        a, b = ours(x), hf(input_ids=x).logits
    assert (a - b).abs().max().item() < 1e-5
    # And back: HF weights load into a fresh model of ours, strictly, giving the same logits.
    fresh = make(cfg, seed=99).eval()
    fresh.load_state_dict(hf_to_state_dict(hf.state_dict()), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), a)


def test_hf_config_dict_is_a_llama_config_json():
    cfg = PRESETS["stage0"].with_vocab(50000)
    d = json.loads(json.dumps(hf_config_dict(cfg)))
    assert d["architectures"] == ["LlamaForCausalLM"] and d["bos_token_id"] == 1 and d["eos_token_id"] == 2
    assert (d["hidden_size"], d["num_hidden_layers"], d["num_key_value_heads"], d["head_dim"]) == (1024, 4, 4, 64)
    assert d["rope_theta"] == d["rope_parameters"]["rope_theta"] == 10000.0
    with pytest.raises(ModelError, match="vocab_size"):
        hf_config_dict(PRESETS["stage0"])


def _fcwork(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from fcwork.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'model info imported torch'; sys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )


def test_cli_model_info_prints_counts_and_memory_without_torch():
    res = _fcwork("model", "info", "fc450", "--checkpointing", "--device", "mps")
    assert res.returncode == 0, res.stderr
    assert "368,264,192" in res.stdout and "455,898,368" in res.stdout and "85,797,120" in res.stdout
    assert "1,837,056" in res.stdout
    assert "mps (bf16)" in res.stdout and "activation checkpointing on" in res.stdout
    res = _fcwork("model", "info", "tiny", "--seq-len", "128", "--micro-batch", "4", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "2,835,584" in res.stdout and "vocab 8,000" in res.stdout


def test_cli_model_info_unknown_preset_is_one_line():
    res = _fcwork("model", "info", "huge")
    assert res.returncode == 2
    assert res.stderr.strip() == "fcwork: error: model preset 'huge': unknown (expected one of tiny, stage0, fc450)"
