"""The Llama-compatible decoder in torch: RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases.

Weights are kept in Hugging Face's layout (rotate-half RoPE, separate q/k/v), so export is a
rename (`engine.model.hf_names`), not a permutation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.errors import ModelError
from engine.model.config import ModelConfig

# scaled_dot_product_attention shares key/value heads itself from torch 2.5 on.
_NATIVE_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)
# Targets with this id add no loss (as in F.cross_entropy): padding, prompts masked out in SFT.
IGNORE = -100

def to_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """x in autocast's dtype when autocast is on: the residual stream then stays bf16 (as it does
    under FSDP's bf16 parameters), which halves its traffic; norms and the loss still upcast."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return x.to(torch.get_autocast_dtype(kind))
    return x


class RMSNorm(nn.Module):
    """Root-mean-square norm with a weight and no bias, computed in float32 as Hugging Face does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rope_tables(head_dim: int, max_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's rotation angles, [max_len, head_dim // 2], in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.arange(max_len, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, heads, head_dim] by position, rotate-half convention (pairs i and i + head_dim/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, per layer: [B, kv_heads, max_len, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    # [B, max_len] bool: which positions hold real tokens (None: all). Batched generation left-pads
    # prompts to one length; padded keys are hidden from every query (RoPE is relative, so the
    # shifted positions of a padded row give it the attention it would have alone).
    valid: torch.Tensor | None = None

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int | None = None, device=None, dtype=None) -> "KVCache":
        shape = (batch, cfg.n_kv_heads, max_len or cfg.max_seq_len, cfg.head_dim)
        make = lambda: torch.zeros(shape, device=device, dtype=dtype or torch.float32)  # noqa: E731
        return cls([make() for _ in range(cfg.n_layers)], [make() for _ in range(cfg.n_layers)])

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, kv_heads, T, head_dim] at start_pos; return all keys and values up to its end."""
        end = start_pos + k.shape[2]
        self.keys[layer][:, :, start_pos:end] = k
        self.values[layer][:, :, start_pos:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Module):
    """Grouped-query self-attention: n_heads query heads share n_kv_heads key/value heads."""

    def __init__(self, cfg: ModelConfig, index: int) -> None:
        super().__init__()
        self.index, self.n_heads, self.n_kv_heads, self.head_dim = index, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = apply_rope(q.view(B, T, self.n_heads, self.head_dim), cos, sin).transpose(1, 2)
        k = apply_rope(k.view(B, T, self.n_kv_heads, self.head_dim), cos, sin).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.index, k, v, start_pos)
        if cache is not None and cache.valid is not None:
            mask, causal = _padded_mask(T, k.shape[2], cache.valid), False
        else:
            mask, causal = _attention_mask(T, k.shape[2], x.device)
        gqa = {}
        if self.n_kv_heads != self.n_heads and _NATIVE_GQA:
            gqa = {"enable_gqa": True}
        elif self.n_kv_heads != self.n_heads:
            k, v = (t.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1) for t in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **gqa)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


def _attention_mask(T: int, L: int, device) -> tuple[torch.Tensor | None, bool]:
    """The mask for T new queries over L keys (the last T of them new): causal, none, or explicit."""
    if T == L:
        return None, True
    if T == 1:
        return None, False
    past = L - T
    return torch.arange(T, device=device)[:, None] + past >= torch.arange(L, device=device)[None, :], False


def _padded_mask(T: int, L: int, valid: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, L] for T new queries over L keys: causal, real keys only, and each query's own key
    (a padded query then attends to itself alone, so no row is empty and no NaN appears)."""
    past = L - T
    q = torch.arange(T, device=valid.device)[:, None] + past
    k = torch.arange(L, device=valid.device)[None, :]
    return (q >= k) & (valid[:, None, None, :L] | (q == k))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """One pre-norm decoder layer: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, index: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, index)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, start_pos)
        return x + self.mlp(self.mlp_norm(x))


def check_config(cfg: ModelConfig) -> None:
    """Raise ModelError naming the first problem with `cfg` (vocab_size must be filled in)."""
    if cfg.vocab_size <= 0:
        raise ModelError(
            f"model.vocab_size: expected a positive integer (the tokenizer's vocabulary size), got {cfg.vocab_size}"
        )
    problems = cfg.check()
    if problems:
        raise ModelError(f"model.{problems[0]}")


class _CrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy in float32 whose backward is one pass: softmax, scaled, minus the target.

    Same values and gradients as F.cross_entropy, but faster on CPU (no zero-filled one-hot, no
    log-softmax backward), and it keeps the logits in their own dtype (bf16 under autocast)
    for the backward instead of a float32 log-softmax. IGNORE targets get loss and gradient 0.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        keep = targets != IGNORE
        safe = torch.where(keep, targets, 0)[:, None]
        ctx.save_for_backward(logits, safe, keep)
        return -torch.log_softmax(_upcast(logits), dim=-1).gather(-1, safe)[:, 0] * keep

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, safe, keep = ctx.saved_tensors
        out = torch.softmax(_upcast(logits), dim=-1)
        g = (grad.to(out.dtype) * keep)[:, None]
        out.mul_(g)
        out.scatter_add_(-1, safe, -g)
        return out.to(logits.dtype), None


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 to float32; float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token loss in float32 for logits [N, V] and targets [N] (IGNORE-d targets give 0)."""
    return _CrossEntropy.apply(logits, targets)


class Transformer(nn.Module):
    """The decoder: token embedding, `n_layers` blocks, final norm, lm head (optionally tied)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.activation_checkpointing = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights, output projections scaled by 1/sqrt(2 n_layers), norms at one.

        Also recomputes the RoPE tables, so a model built on the meta device can be
        `to_empty(device=...)`-ed and then initialised in place.
        """
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                is_out = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, mean=0.0, std=out_std if is_out else std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        if self.rope_cos.device.type != "meta":
            cos, sin = rope_tables(self.cfg.head_dim, self.cfg.max_seq_len, self.cfg.rope_theta, self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them."""
        self.activation_checkpointing = bool(enabled)

    def num_params(self) -> int:
        """Parameters counted once (a tied lm head shares the embedding's)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0,
                last_only: bool = False) -> torch.Tensor:
        """Logits [B, T, vocab] for tokens [B, T] at positions start_pos.. (a cache holds the earlier ones);
        with `last_only`, [B, 1, vocab] for the last position alone (a prompt's prefill needs no more)."""
        return self.decode(self.embed(tokens), cache, start_pos, last_only)

    def decode(self, h: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0,
               last_only: bool = False) -> torch.Tensor:
        """Logits for input embeddings h [B, T, dim] (the token embeddings, or with images spliced in)."""
        T = h.shape[1]
        limit, what = self.cfg.max_seq_len, "max_seq_len"
        if cache is not None and cache.max_len < limit:
            limit, what = cache.max_len, "the KV cache's length"
        if start_pos + T > limit:
            raise ModelError(f"tokens: expected at most {limit} positions ({what}), got {start_pos + T}")
        cos = self.rope_cos[start_pos : start_pos + T]
        sin = self.rope_sin[start_pos : start_pos + T]
        h = to_compute_dtype(h)
        recompute = self.activation_checkpointing and cache is None and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                h = checkpoint(layer, h, cos, sin, use_reentrant=False)
            else:
                h = layer(h, cos, sin, cache, start_pos)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(self.norm(h))

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of next-token prediction in float32: a scalar, or per token [B, T] for "none".

        Targets equal to -100 are ignored (and get loss 0 with reduction "none").
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
        per_token = cross_entropy(self(inputs).flatten(0, 1), targets.flatten())
        if reduction == "none":
            return per_token.view(targets.shape)
        return per_token.sum() / (targets != IGNORE).sum().clamp(min=1)
