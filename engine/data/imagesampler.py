"""The image-text sampler: micro-batches of at most one image plus token rows, each a pure function
of (seed, step's mix, first sequence index), like engine.data.sampler, so a resumed run (even after
SIGKILL) sees exactly the same images, captions and text.

The mix holds text domains and image-text domains together (e.g. `caption = 0.3`): the image-text
domains' share of the mix in force is the probability that a micro-batch carries an image (1: every
one does, as in an `align` stage; 0: text only). The text domains' weights, renormalised, drive the
text sampler as before, so editing the text mix live works unchanged.

A micro-batch of `count` rows (sequence indices first_index .. first_index + count - 1, the same
indices engine.data.sampler uses) is either
- text: exactly the text sampler's rows; or
- image: row 0 is `<image>` x `image_tokens` (the tower's embeddings per image, LLaVA's expanded
  layout, so positions and seq_len are honest), then the caption's tokens and EOS, then the rest of
  the window filled from the text stream (the start of the text row this sequence index would
  have had: packed, as text windows are) or, when the mix has no text, padded with EOS and masked
  out; rows 1.. are the text sampler's rows (a micro-batch never holds two images: with no text
  in the mix, `count` must be 1).

`loss_mask[r, j]` says whether target `tokens[r, j + 1]` counts: False where the target is an image
placeholder or padding, True elsewhere (the last image position predicts the caption's first token).
So the loss tokens of a step are `loss_mask.sum()`: with text fill every non-image position counts.
The image micro-batch decision, the image domain and the pair are drawn from counter-based hashes
of (seed, first_index) on streams of their own, independent of the text sampler's draws.

No torch here: the trainer turns the arrays into tensors. In a trainer:

    prepare_images(ws, profile, size)                       # engine.data.imagedata; no-op when current
    pairs = open_image_data(ws, profile, size, tokenizer_hash=h, vocab_size=v)
    sampler = ImageTextSampler(pairs, text_shards, seq_len, seed, schedule, image_token_id, eos_id, n_patches)
    mb = sampler.micro_batch(step, sequence_index(step, m, rank, ...), micro_batch)
    # mb.tokens, mb.loss_mask, mb.domain_ids; mb.image (or None) goes to the tower; a live mix change:
    # sampler.check(mix), then sampler.schedule.add(step, mix)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from engine.data.imagedata import ImagePairs
from engine.data.sampler import MASK64, MixSchedule, Sampler, _finalise, _splitmix_scalar, GOLDEN
from engine.data.shards import Shard
from engine.errors import DataError

# Stream tags of this sampler's draws: image or text, which image domain, which pair.
IMAGE_STREAM, IMAGE_DOMAIN_STREAM, PAIR_STREAM = 0x696D616765, 0x696D67646F6D, 0x70616972


def _uniforms(seed: int, index: int, tags: tuple[int, ...]) -> list[int]:
    """One uint64 hash of (seed, index) per stream tag: SplitMix64 output `index` of each stream's key."""
    z = np.array([_splitmix_scalar((seed & MASK64) * GOLDEN + t) for t in tags], dtype=np.uint64)
    z = z + np.uint64((index * GOLDEN) & MASK64)
    return [int(v) for v in _finalise(z)]


class TextPart(MixSchedule):
    """A live view of a mix schedule without its image-text domains: what the text sampler draws by.
    Entries added to the full schedule show through at once."""

    def __init__(self, full: MixSchedule, image_domains: set[str]) -> None:
        super().__init__()
        self.full = full
        self.image_domains = set(image_domains)

    def _text(self, weights: Mapping[str, float]) -> dict[str, float]:
        return {d: w for d, w in weights.items() if d not in self.image_domains}

    def entry_at(self, step: int) -> tuple[int, dict[str, float]]:
        start, weights = self.full.entry_at(step)
        return start, self._text(weights)

    def weights_at(self, step: int) -> dict[str, float]:
        w = self.entry_at(step)[1]
        total = sum(w.values())
        return {k: v / total for k, v in w.items()} if total else {k: 0.0 for k in w}

    def entries(self) -> list[tuple[int, dict[str, float]]]:
        return [(s, self._text(w)) for s, w in self.full.entries()]

    def __len__(self) -> int:
        return len(self.full)


@dataclass
class MicroBatch:
    """One micro-batch: rows of seq_len + 1 token ids (inputs tokens[:, :-1], targets tokens[:, 1:])."""

    tokens: np.ndarray  # int64 [count, seq_len + 1]
    domain_ids: np.ndarray  # int64 [count], into ImageTextSampler.domains (row 0 of an image batch: its image domain)
    loss_mask: np.ndarray  # bool [count, seq_len]: target tokens[:, j + 1] counts in the loss
    image: np.ndarray | None = None  # uint8 [size, size, 3] (a read-only view of the image shard), or None
    image_row: int = -1  # the row holding the image (0), or -1
    image_tokens: int = 0  # `<image>` positions at the start of image_row
    caption_len: int = 0  # caption tokens + EOS after them: targets image_tokens - 1 .. + caption_len - 1
    domain: str = ""  # the image-text domain of the image
    pair: int = -1  # the pair's index in its domain

    @property
    def n_loss_tokens(self) -> int:
        """Targets that count in the loss (the honest tokens of this micro-batch)."""
        return int(self.loss_mask.sum())

    def caption_mask(self) -> np.ndarray:
        """bool [count, seq_len]: the targets that are the caption and its EOS (for a caption loss)."""
        mask = np.zeros_like(self.loss_mask)
        if self.image_row >= 0:
            mask[self.image_row, self.image_tokens - 1:self.image_tokens - 1 + self.caption_len] = True
        return mask


def image_row(pairs: ImagePairs, p: int, seq_len: int, image_token_id: int, image_tokens: int, eos_id: int,
              fill: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(tokens [seq_len + 1], loss_mask [seq_len], caption_len) of pair p: `<image>` x image_tokens,
    caption, EOS, then `fill` (text tokens, counted) or EOS padding (masked). A caption longer than
    the window is cut (without its EOS). Also what held-out caption evaluation uses (fill None)."""
    width = seq_len + 1
    if image_tokens < 1 or image_tokens >= width - 1:
        raise DataError(f"image sampler: image_tokens {image_tokens}: expected 1 to {width - 2} for seq_len {seq_len}")
    caption = np.asarray(pairs.caption(p), dtype=np.int64)[: width - image_tokens]
    row = np.full(width, eos_id, dtype=np.int64)
    row[:image_tokens] = image_token_id
    row[image_tokens:image_tokens + caption.size] = caption
    end = min(image_tokens + caption.size + 1, width)  # after the EOS, or the window's end
    caption_len = end - image_tokens
    mask = np.zeros(seq_len, dtype=bool)
    mask[image_tokens - 1:end - 1] = True  # targets image_tokens .. end - 1
    if fill is not None and end < width:
        row[end:] = fill[: width - end]
        mask[end - 1:] = True
    return row, mask, caption_len


class ImageTextSampler:
    """Micro-batches of text rows and at most one image (see the module docstring).

    `pairs`: the training side of each image-text domain (engine.data.imagedata.open_image_data);
    `text`: the text shards (None or empty for an image-only stage); `schedule`: the full mix
    (text and image-text domains). `image_token_id` is the tokenizer's id of `<image>`;
    `image_tokens` the embeddings the model puts at it per image.
    """

    def __init__(self, pairs: Mapping[str, ImagePairs], text: Mapping[str, Shard] | None, seq_len: int, seed: int,
                 schedule: MixSchedule, image_token_id: int, eos_id: int, image_tokens: int = 1) -> None:
        if not pairs:
            raise DataError("image sampler: no image-text domains given")
        if image_tokens < 1 or image_tokens >= seq_len:
            raise DataError(f"image sampler: image_tokens {image_tokens}: expected 1 to {seq_len - 1} (below seq_len)")
        self.seq_len, self.seed = seq_len, int(seed)
        self.schedule = schedule
        self.image_token_id, self.eos_id, self.image_tokens = image_token_id, eos_id, image_tokens
        self.image_domains = sorted(pairs)
        self.pairs = {d: pairs[d] for d in self.image_domains}
        self.text_schedule = TextPart(schedule, set(self.image_domains))
        self.text: Sampler | None = Sampler(dict(text), seq_len, seed, self.text_schedule) if text else None
        self.text_domains = self.text.domains if self.text else []
        self.domains = self.text_domains + self.image_domains
        self._cum_cache: dict[tuple, tuple[float, np.ndarray]] = {}
        for _, weights in schedule.entries():
            self.check(weights)

    def check(self, weights: Mapping[str, float]) -> None:
        """Refuse a mix this sampler cannot serve (a weighted domain with no data): one-line DataError."""
        for name, w in weights.items():
            if w > 0 and name not in self.pairs and (self.text is None or name not in self.text.shards):
                raise DataError(f"mix: domain {name!r} has weight {w:g} but no data (domains: {', '.join(self.domains)})")
            if w > 0 and name in self.pairs and self.pairs[name].n_pairs == 0:
                raise DataError(f"{self.pairs[name].shard.path}.pairs: domain {name!r} has weight {w:g} but no pairs")
        text = {d: w for d, w in weights.items() if d not in self.pairs}
        if self.text is not None and sum(text.values()) > 0:
            self.text.check(text)

    def _split(self, step: int) -> tuple[float, np.ndarray]:
        """(share of micro-batches with an image, cumulative weights over the image domains) at `step`."""
        weights = self.schedule.entry_at(step)[1]
        key = tuple(sorted(weights.items()))
        hit = self._cum_cache.get(key)
        if hit is None:
            self.check(weights)
            total = sum(weights.values())
            img = np.array([weights.get(d, 0.0) for d in self.image_domains], dtype=np.float64)
            share = float(img.sum() / total) if total else 0.0
            cum = np.cumsum(img / img.sum()) if img.sum() > 0 else np.ones(len(img))
            cum[-1] = 1.0
            hit = self._cum_cache[key] = (share, cum)
        return hit

    def image_share(self, step: int) -> float:
        """The probability that a micro-batch at `step` carries an image."""
        return self._split(step)[0]

    def draw(self, step: int, first_index: int) -> tuple[str, int] | None:
        """(image domain, pair) of the micro-batch starting at sequence `first_index`, or None (text only)."""
        if first_index < 0:
            raise DataError(f"image sampler: first_index {first_index}: expected an integer >= 0")
        share, cum = self._split(step)
        if share <= 0:
            return None
        h_img, h_dom, h_pair = _uniforms(self.seed, first_index, (IMAGE_STREAM, IMAGE_DOMAIN_STREAM, PAIR_STREAM))
        if share < 1 and (h_img >> 11) * (1.0 / (1 << 53)) >= share:
            return None
        k = int(np.searchsorted(cum, (h_dom >> 11) * (1.0 / (1 << 53)), side="right"))
        domain = self.image_domains[min(k, len(self.image_domains) - 1)]
        return domain, h_pair % self.pairs[domain].n_pairs

    def micro_batch(self, step: int, first_index: int, count: int) -> MicroBatch:
        """The micro-batch of sequences first_index .. first_index + count - 1 at `step`."""
        if count < 1:
            raise DataError(f"image sampler: count {count}: expected a positive integer")
        picked = self.draw(step, first_index)
        has_text = self.text is not None and sum(self.text_schedule.entry_at(step)[1].values()) > 0
        if has_text:
            tokens, dom = self.text.batch(step, first_index, count)
        else:
            if picked is None:
                raise DataError(f"image sampler: the mix at step {step} weights no domain with data")
            if count > 1:
                raise DataError(f"image sampler: micro_batch {count} with no text in the mix: a micro-batch holds "
                                "at most one image, so an image-only stage needs micro_batch = 1 (use grad_accum)")
            tokens, dom = np.empty((1, self.seq_len + 1), np.int64), np.zeros(1, np.int64)
        mask = np.ones((count, self.seq_len), dtype=bool)
        if picked is None:
            return MicroBatch(tokens, dom, mask)
        domain, p = picked
        pairs = self.pairs[domain]
        row, row_mask, caption_len = image_row(pairs, p, self.seq_len, self.image_token_id, self.image_tokens,
                                               self.eos_id, tokens[0].copy() if has_text else None)
        tokens[0], mask[0] = row, row_mask
        dom[0] = len(self.text_domains) + self.image_domains.index(domain)
        return MicroBatch(tokens, dom, mask, image=pairs.image(p), image_row=0, image_tokens=self.image_tokens,
                          caption_len=caption_len, domain=domain, pair=p)

    def epochs(self, tokens_drawn: Mapping[str, int]) -> dict[str, float]:
        """Passes per domain: text domains as the text sampler counts them; an image-text domain's
        tokens drawn over its pairs' tokens (captions with EOS plus the image positions)."""
        out = {}
        text = {d: n for d, n in tokens_drawn.items() if d not in self.pairs}
        if text:
            if self.text is None:
                raise DataError(f"image sampler: domain {next(iter(text))!r} has no data (domains: {', '.join(self.domains)})")
            out.update(self.text.epochs(text))
        for d, n in tokens_drawn.items():
            if d in self.pairs:
                total = self.pairs[d].captions.n_tokens + self.pairs[d].n_pairs * self.image_tokens
                out[d] = n / total if total else 0.0
        return out

    def state(self) -> dict[str, Any]:
        """Nothing to save beyond the text sampler's: every draw is recomputed from (seed, step, index)."""
        return {"seed": self.seed, "image_tokens": self.image_tokens}
