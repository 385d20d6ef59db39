"""Text generation with the KV cache: greedy, temperature, top-k, top-p, stop at EOS.

The prompt is run once to fill the cache, then each new token costs one single-position
forward pass. The sampler functions take plain logits, so they are tested without a model;
`generate_recompute` (the whole prefix every step) is the baseline the cache is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from engine.errors import ModelError
from engine.model.decoder import KVCache, Transformer
from engine.data.tokenizer import EOS_ID


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick each next token; temperature 0 is greedy (top_k/top_p then do not matter)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0        # 0: no top-k cut
    top_p: float = 1.0    # 1: no nucleus cut
    seed: int = 0

    def check(self) -> None:
        if self.max_new_tokens < 0:
            raise ModelError(f"max_new_tokens: expected a non-negative integer, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ModelError(f"temperature: expected a number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ModelError(f"top_k: expected a non-negative integer, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ModelError(f"top_p: expected a number in (0, 1], got {self.top_p}")


GREEDY = SamplingConfig()


@dataclass
class Generation:
    """The new tokens and why generation ended: "eos", "stop" (the stop callback), "length" or "context"."""

    tokens: list[int]
    reason: str
    prompt_tokens: int


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits [..., V] with all but the k largest per row set to -inf (k <= 0 or >= V: unchanged)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Logits [..., V] keeping the smallest set of most likely tokens whose probability reaches p.

    The most likely token is always kept; a token is dropped when the tokens ranked above it
    already reach p.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids [B] from last-position logits [B, V] under `cfg`."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / cfg.temperature
    scaled = top_p_filter(top_k_filter(scaled, cfg.top_k), cfg.top_p)
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _fit_prompt(model: Transformer, prompt: Sequence[int], max_new: int) -> list[int]:
    """The prompt cut from the left so prompt + max_new fits the model's context (at least 1 token kept)."""
    if not prompt:
        raise ModelError("prompt: expected at least one token")
    room = max(model.cfg.max_seq_len - max_new, 1)
    return list(prompt[-room:])


@torch.no_grad()
def generate(
    model: Transformer,
    prompt: Sequence[int],
    cfg: SamplingConfig = GREEDY,
    stop_ids: Sequence[int] = (EOS_ID,),
    stop: Callable[[list[int]], bool] | None = None,
    on_token: Callable[[int], None] | None = None,
    images: torch.Tensor | None = None,
) -> Generation:
    """Up to cfg.max_new_tokens tokens after `prompt`, with the KV cache.

    Ends at a token in `stop_ids` (not included) or when `stop(new_tokens)` says so (included).
    `on_token` sees each kept token as it comes (for streaming). A prompt longer than the
    context allows is cut from the left; one with `images` (pixel values for its `<image>`
    positions, a VisionLanguageModel) must fit whole.
    """
    cfg.check()
    if images is not None and len(prompt) + cfg.max_new_tokens > model.cfg.max_seq_len:
        raise ModelError(f"prompt: {len(prompt)} tokens with the image's, plus max_new_tokens {cfg.max_new_tokens}: "
                         f"expected at most the model's max_seq_len ({model.cfg.max_seq_len})")
    ids = _fit_prompt(model, prompt, cfg.max_new_tokens)
    param = next(model.parameters())
    max_len = min(len(ids) + cfg.max_new_tokens, model.cfg.max_seq_len)
    cache = KVCache.empty(model.cfg, 1, max_len, device=param.device, dtype=param.dtype)
    gen = torch.Generator(device=param.device).manual_seed(cfg.seed) if cfg.temperature > 0 else None
    was_training = model.training
    model.eval()
    out: list[int] = []
    reason = "length"
    try:
        with_images = {} if images is None else {"images": images.to(param.device)}
        logits = model(torch.tensor([ids], device=param.device), cache=cache, start_pos=0, last_only=True,
                       **with_images)[:, -1]
        pos = len(ids)  # where the next fed token goes
        for i in range(cfg.max_new_tokens):
            nxt = int(sample_next(logits, cfg, gen)[0])
            if nxt in stop_ids:
                reason = "eos"
                break
            out.append(nxt)
            if on_token is not None:
                on_token(nxt)
            if stop is not None and stop(out):
                reason = "stop"
                break
            if i == cfg.max_new_tokens - 1:
                break
            if pos >= max_len:
                reason = "context"
                break
            logits = model(torch.tensor([[nxt]], device=param.device), cache=cache, start_pos=pos)[:, -1]
            pos += 1
    finally:
        model.train(was_training)
    return Generation(out, reason, len(ids))


@torch.no_grad()
def generate_batch(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig = GREEDY,
    stop_ids: Sequence[int] = (EOS_ID,),
    stops: Sequence[Callable[[list[int]], bool] | None] | None = None,
) -> list[Generation]:
    """`generate` for several prompts in one pass per step: the same tokens as one at a time.

    Prompts are left-padded to one length and the padding hidden from attention (KVCache.valid);
    row i samples with its own generator seeded cfg.seed + i. A row that ended is fed EOS and its
    output ignored until every row has ended.
    """
    cfg.check()
    if not prompts:
        return []
    stops = list(stops) if stops is not None else [None] * len(prompts)
    fitted = [_fit_prompt(model, p, cfg.max_new_tokens) for p in prompts]
    B, width = len(fitted), max(len(p) for p in fitted)
    param = next(model.parameters())
    max_len = min(width + cfg.max_new_tokens, model.cfg.max_seq_len)
    cache = KVCache.empty(model.cfg, B, max_len, device=param.device, dtype=param.dtype)
    cache.valid = torch.zeros(B, max_len, dtype=torch.bool, device=param.device)
    rows = torch.full((B, width), EOS_ID, dtype=torch.long)
    for i, p in enumerate(fitted):
        rows[i, width - len(p):] = torch.tensor(p)
        cache.valid[i, width - len(p):width] = True
    cache.valid[:, width:] = True
    gens = [torch.Generator(device=param.device).manual_seed(cfg.seed + i) for i in range(B)] \
        if cfg.temperature > 0 else [None] * B
    outs: list[list[int]] = [[] for _ in range(B)]
    reasons: list[str | None] = [None] * B
    was_training = model.training
    model.eval()
    try:
        logits = model(rows.to(param.device), cache=cache, start_pos=0, last_only=True)[:, -1]
        pos = width
        for step in range(cfg.max_new_tokens):
            greedy = logits.argmax(dim=-1).tolist() if cfg.temperature == 0 else None
            nxt = [EOS_ID if reasons[i] is not None else greedy[i] if greedy is not None
                   else int(sample_next(logits[i:i + 1], cfg, gens[i])[0]) for i in range(B)]
            for i, t in enumerate(nxt):
                if reasons[i] is not None:
                    continue
                if t in stop_ids:
                    reasons[i] = "eos"
                    continue
                outs[i].append(t)
                if stops[i] is not None and stops[i](outs[i]):
                    reasons[i] = "stop"
                elif step == cfg.max_new_tokens - 1:
                    reasons[i] = "length"
                elif pos >= max_len:
                    reasons[i] = "context"
            if all(r is not None for r in reasons):
                break
            logits = model(torch.tensor([nxt], device=param.device).T, cache=cache, start_pos=pos)[:, -1]
            pos += 1
    finally:
        model.train(was_training)
    return [Generation(o, r or "length", len(p)) for o, r, p in zip(outs, reasons, fitted)]


@torch.no_grad()
def generate_recompute(
    model: Transformer, prompt: Sequence[int], cfg: SamplingConfig = GREEDY, stop_ids: Sequence[int] = (EOS_ID,),
) -> Generation:
    """The same as `generate` without a cache: the whole prefix goes through the model for every token.

    The baseline of bench/generate.py, and the reference the cached path is tested against.
    """
    cfg.check()
    ids = _fit_prompt(model, prompt, cfg.max_new_tokens)
    param = next(model.parameters())
    gen = torch.Generator(device=param.device).manual_seed(cfg.seed) if cfg.temperature > 0 else None
    was_training = model.training
    model.eval()
    seq = list(ids)
    reason = "length"
    try:
        for i in range(cfg.max_new_tokens):
            logits = model(torch.tensor([seq], device=param.device))[:, -1]
            nxt = int(sample_next(logits, cfg, gen)[0])
            if nxt in stop_ids:
                reason = "eos"
                break
            seq.append(nxt)
            if i == cfg.max_new_tokens - 1:
                break
            if len(seq) > model.cfg.max_seq_len:
                reason = "context"
                break
    finally:
        model.train(was_training)
    return Generation(seq[len(ids):], reason, len(ids))


class TextStream:
    """Turns generated token ids into the text they add, piece by piece, for printing as they come.

    The whole output is decoded each time and the new suffix returned; a suffix ending in a
    replacement character (half of a multi-byte character) waits for the next token.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.shown = ""

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return ""
        new, self.shown = text[len(self.shown):], text
        return new

    def flush(self) -> str:
        """What is left once generation ended (a trailing partial character included)."""
        text = self.decode(self.ids)
        new = text[len(self.shown):] if text.startswith(self.shown) else ""
        self.shown = text
        return new
