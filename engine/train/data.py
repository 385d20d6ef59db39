"""The trainer's data: training shards per domain behind the sampler, and fixed held-out windows.

Training batches come from engine.data.sampler, a pure function of (seed, sequence index, mix in force),
so a resumed run draws exactly what the uninterrupted run would have. Held-out windows are
evenly spaced over each domain's held-out shard: the same windows at every eval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import DataError
from engine.data.shards import open_shard


def open_training_shards(shard_dir: Path, domains: list[str], tokenizer_hash: str, vocab_size: int) -> dict:
    """One shard per domain, checked against the run's tokenizer (DataError/ShardError when not)."""
    shards = {}
    for domain in domains:
        prefix = shard_dir / domain
        if not (shard_dir / f"{domain}.bin").exists():
            raise DataError(f"{shard_dir / f'{domain}.bin'}: no shard for domain {domain!r} (pretokenize the data again)")
        shards[domain] = open_shard(prefix, expected_hash=tokenizer_hash, expected_vocab=vocab_size)
    return shards


def heldout_windows(
    shard_dir: Path, domains: list[str], tokenizer_hash: str, vocab_size: int, seq_len: int, count: int,
) -> dict[str, np.ndarray]:
    """`count` windows of seq_len + 1 tokens per domain, evenly spaced over `heldout/<domain>`.

    Domains without a held-out shard (or with fewer than seq_len + 1 tokens) are left out.
    """
    out: dict[str, np.ndarray] = {}
    width = seq_len + 1
    for domain in domains:
        prefix = shard_dir / "heldout" / domain
        if not (shard_dir / "heldout" / f"{domain}.bin").exists():
            continue
        shard = open_shard(prefix, expected_hash=tokenizer_hash, expected_vocab=vocab_size)
        n = int(shard.n_tokens)
        if n < width:
            continue
        starts = np.linspace(0, n - width, num=count).round().astype(np.int64)
        out[domain] = np.stack([np.asarray(shard.tokens[s:s + width], dtype=np.int64) for s in starts])
    return out


def window_bytes(windows: dict[str, np.ndarray], tokenizer_path: Path) -> dict[str, int] | None:
    """UTF-8 bytes of each domain's target tokens (for bits per byte); None if the tokenizer won't load."""
    from engine.errors import TokenizerError
    from engine.data.tokenizer import Tokenizer

    try:
        tok = Tokenizer.load(tokenizer_path)
    except TokenizerError:
        return None
    return {d: sum(len(tok.decode(row[1:].tolist()).encode("utf-8")) for row in w) for d, w in windows.items()}
