"""The vision half of evaluation, on held-out image-text pairs (engine.data.imagedata): caption loss
and bits per byte (`caption_eval`), and image probes with checked answers (`image_probes`):

- `fen`: the model sees a held-out board diagram and `FEN:`, and writes the position; the score is
  the share of the 64 squares it got right (empty or the right piece), over the boards.
- `chart`: the model sees a held-out chart and its caption up to one label (`A bar chart of goals:
  Ajax 9, Benfica`); the first number it writes must equal that label's value (exact match).

Each probe is scored twice: on the image, and on a blank image of the same size (`blind`): what the
decoder's prior alone writes. A tower that reads its input scores above its own `blind`.

The ground truth is the pairs' `meta` (`<domain>.captions.jsonl`, line k = pair k). Greedy decoding.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

VERSION = 1
FEN_TOKENS = 48
CHART_TOKENS = 4
_NUMBER = re.compile(r"-?\d+")


def fen_squares(board: str) -> list[str] | None:
    """The 64 squares of a FEN's board field ('.' empty), rank 8 first; None if it is not one."""
    ranks = board.strip().split(" ")[0].split("/")
    if len(ranks) != 8:
        return None
    out: list[str] = []
    for rank in ranks:
        row, whole = _rank_squares(rank)
        if not whole or len(row) != 8:
            return None
        out += row
    return out


def _rank_squares(rank: str) -> tuple[list[str], bool]:
    """One rank of a FEN board as squares, as far as it parses, and whether all of it did."""
    row: list[str] = []
    for ch in rank:
        if ch.isdigit():
            row += ["."] * int(ch)
        elif ch in "pnbrqkPNBRQK":
            row.append(ch)
        else:
            return row, False
    return row, True


def square_accuracy(written: str, truth: str) -> float:
    """Share of the 64 squares a written board gets right: rank by rank as far as it parses, so a
    board cut short keeps the ranks it wrote."""
    want = fen_squares(truth)
    assert want is not None
    got: list[str] = []
    for rank in written.strip().split(" ")[0].split("/")[:8]:
        got += (_rank_squares(rank)[0] + ["?"] * 8)[:8]
    got = (got + ["?"] * 64)[:64]
    return sum(a == b for a, b in zip(got, want)) / 64


def read_meta(folder: Path, domain: str) -> list[dict[str, Any]]:
    """The held-out pairs' captions and ground truth, in pair order."""
    path = folder / "heldout" / f"{domain}.captions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def caption_kind(rec: dict[str, Any]) -> str:
    """What a held-out pair's caption states: "fen" (a board's FEN), "chart" (a chart's values) or
    "sentence" (a board described in words)."""
    if rec.get("text", "").startswith("FEN:"):
        return "fen"
    return "chart" if "labels" in (rec.get("meta") or {}) else "sentence"


def image_probes(model, tok, pairs: dict, folder: Path, limit: int = 8) -> dict[str, dict[str, float]]:
    """{"fen": {"square_accuracy", "blind", "n"}, "chart": {"exact", "blind", "n"}} over at most `limit`
    held-out boards and charts of the run's image-text domains (a probe without items is left out);
    `blind` is the same score with a blank image in place of each one."""
    import torch

    from engine.model.generate import SamplingConfig, generate
    from engine.model.vision import to_pixels

    image_id, n_image = model.image_token_id, model.cfg.image_tokens
    fen_scores: list[tuple[float, float]] = []
    chart_hits: list[tuple[bool, bool]] = []
    for domain, side in pairs.items():
        for p, rec in enumerate(read_meta(folder, domain)[: side.n_pairs]):
            meta, text, kind = rec.get("meta") or {}, rec.get("text", ""), caption_kind(rec)
            if kind == "fen" and "fen" in meta and len(fen_scores) < limit:
                prompt, max_new = "FEN:", FEN_TOKENS
            elif kind == "chart" and "values" in meta and len(chart_hits) < limit:
                k = p % len(meta["labels"])
                label, value = meta["labels"][k], meta["values"][k]
                cut = text.find(f"{label} {value}")
                if cut < 0:
                    continue
                prompt, max_new = text[:cut + len(label)], CHART_TOKENS
            else:
                continue
            ids = [image_id] * n_image + tok.encode(prompt)
            max_new = min(max_new, model.cfg.max_seq_len - len(ids))  # a short context: the board's first ranks
            if max_new < 1:
                continue
            image = torch.from_numpy(side.image(p).copy())[None]
            outs = [tok.decode(generate(model, ids, SamplingConfig(max_new), images=to_pixels(im)).tokens)
                    for im in (image, torch.full_like(image, 128))]
            if kind == "fen":
                fen_scores.append(tuple(square_accuracy(out, meta["fen"]) for out in outs))
            else:
                chart_hits.append(tuple(_first_number(out) == value for out in outs))
    result: dict[str, dict[str, float]] = {}
    for name, metric, scores in (("fen", "square_accuracy", fen_scores), ("chart", "exact", chart_hits)):
        if scores:
            result[name] = {metric: sum(s[0] for s in scores) / len(scores),
                            "blind": sum(s[1] for s in scores) / len(scores), "n": len(scores)}
    return result


def _first_number(text: str) -> int | None:
    m = _NUMBER.search(text)
    return int(m.group()) if m else None


def open_image_pairs(spec, heldout: bool) -> dict:
    """The run's image-text domains (training side or held-out) of an engine.jobs.spec.RunSpec,
    checked against its tokenizer; a domain without held-out pairs is left out of the held-out side."""
    from engine.data.imagedata import open_pairs

    if spec.images is None:
        return {}
    base = spec.images / "heldout" if heldout else spec.images
    out = {}
    for d in spec.image_domains:
        if heldout and not (base / f"{d}.img").exists():
            continue
        out[d] = open_pairs(base / d, d, spec.model.image_size, spec.tokenizer_hash, spec.model.vocab_size)
    return out


def pixels(image, device):
    """A uint8 image [H, W, 3], or N of them [N, H, W, 3], as the tower's pixel values [N, 3, H, W] on
    `device` (None: no image); the uint8 bytes travel, a quarter of the floats."""
    if image is None:
        return None
    from engine.model.vision import to_pixels
    from engine.model.transfer import to_device

    batch = np.array(image)  # a copy: shard images are read-only memory maps, which torch will not wrap
    return to_pixels(to_device(batch[None] if batch.ndim == 3 else batch, device))


def masked_targets(tokens, loss_mask: np.ndarray | None):
    """tokens[:, 1:] with the targets outside `loss_mask` set to IGNORE (no loss)."""
    import torch

    from engine.model.decoder import IGNORE

    targets = tokens[:, 1:]
    if loss_mask is None:
        return targets
    return targets.masked_fill(~torch.as_tensor(loss_mask, device=tokens.device), IGNORE)


def caption_eval(model, pairs: dict, count: int, seq_len: int, eos_id: int,
                 autocast: Callable[[], Any] = contextlib.nullcontext) -> dict[str, dict[str, float]]:
    """Caption loss (nats per token) and bits per byte of the first `count` held-out pairs of each
    image-text domain: `<image>` positions, caption, EOS; the loss on the caption and its EOS only,
    over the caption's UTF-8 bytes + 1 for the EOS (as a newline would end it)."""
    import torch

    from engine.data.imagesampler import image_row

    device = next(model.parameters()).device
    out: dict[str, dict[str, float]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for domain, side in pairs.items():
                nats, tokens, nbytes = 0.0, 0, 0
                for p in range(min(count, side.n_pairs)):
                    row, mask, _ = image_row(side, p, seq_len, model.image_token_id, model.cfg.image_tokens, eos_id)
                    x = torch.as_tensor(row[None]).to(device)
                    with autocast():
                        per_token = model.loss(x[:, :-1], masked_targets(x, mask[None]), "none",
                                               images=pixels(side.image(p), device))
                    nats += float(per_token.double().sum())
                    tokens += int(mask.sum())
                    nbytes += side.caption_bytes(p) + 1
                if tokens:
                    out[domain] = {"loss": nats / tokens, "bpb": nats / (math.log(2) * nbytes)}
    finally:
        model.train(was_training)
    return out
