"""Pretokenization: the corpus's jsonl files encoded into token shards, in parallel processes.

The main process only cuts each file into byte ranges of whole lines (~1-4 MB) and writes
shards; workers read their range, parse the JSON, encode with their own SentencePiece (loaded
once per worker from the model path) and hand back one compact numpy array per chunk, EOS
included. Results are consumed in submission order, so the shards do not depend on the number
of workers. Small inputs, or workers=1, are encoded in-process with no pool at all.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from engine.errors import DataError, TokenizerError
from engine.data.shards import ShardWriter, open_shard, token_dtype

MIN_CHUNK_BYTES = 256 << 10
MAX_CHUNK_BYTES = 4 << 20
CHUNKS_PER_WORKER = 8  # enough chunks that workers finish close together
SMALL_INPUT_BYTES = 1 << 20  # below this (and below two chunks) starting a pool costs more than it saves

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Chunk:
    """A byte range of whole lines of one input file."""

    domain: str
    split: str
    path: str
    start: int
    end: int


# -- worker side --------------------------------------------------------------------------

_SP: Any = None  # the worker's SentencePieceProcessor
_EOS = 2
_DTYPE = np.dtype("<u2")


def _init_worker(model_path: str, eos_id: int, dtype: str) -> None:
    """Pool initializer: load the tokenizer once per worker (works under fork, forkserver and spawn)."""
    global _SP, _EOS, _DTYPE
    import sentencepiece as spm

    _SP = spm.SentencePieceProcessor(model_file=model_path)
    _EOS, _DTYPE = eos_id, np.dtype(dtype)


def _encode_texts(sp: Any, texts: list[str]) -> list[np.ndarray]:
    """Ids of each text as int32 arrays, on one thread (processes give the parallelism)."""
    try:
        return sp.encode(texts, return_type="numpy", num_threads=1)
    except (TypeError, ValueError):  # sentencepiece without numpy output
        return [np.asarray(ids, dtype=np.int32) for ids in sp.encode(texts, num_threads=1)]


def _encode_chunk(chunk: Chunk) -> tuple:
    """Pool task: encode a chunk with this worker's tokenizer."""
    return encode_chunk(_SP, _EOS, _DTYPE, chunk)


def encode_chunk(sp: Any, eos_id: int, dtype: np.dtype, chunk: Chunk) -> tuple:
    """("ok", tokens, doc_lengths, chars) for a chunk, EOS after each document; ("bad", byte offset, reason)."""
    with open(chunk.path, "rb") as fh:
        fh.seek(chunk.start)
        data = fh.read(chunk.end - chunk.start)
    texts: list[str] = []
    pos = chunk.start
    for line in data.split(b"\n"):
        here, pos = pos, pos + len(line) + 1
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            return ("bad", here, f"not valid JSON ({exc.msg})")
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            return ("bad", here, 'expected an object with a "text" string')
        texts.append(text)
    arrays = _encode_texts(sp, texts) if texts else []
    lengths = np.fromiter((a.size + 1 for a in arrays), dtype=np.uint64, count=len(arrays))
    tokens = np.empty(int(lengths.sum()), dtype)
    if arrays:
        ends = np.cumsum(lengths, dtype=np.int64)
        eos_at = ends - 1
        mask = np.ones(tokens.size, bool)
        mask[eos_at] = False
        tokens[mask] = np.concatenate(arrays)
        tokens[eos_at] = eos_id
    return ("ok", tokens, lengths, sum(len(t) for t in texts))


# -- main side ----------------------------------------------------------------------------

def _line_number(path: str, offset: int) -> int:
    with open(path, "rb") as fh:
        return fh.read(offset).count(b"\n") + 1


def _chunks(domain: str, split: str, path: Path, chunk_bytes: int, start: int = 0, end: int = -1) -> list[Chunk]:
    """Byte ranges of ~chunk_bytes from `start` to `end` (-1: the file's end), each ending at a line boundary."""
    size = path.stat().st_size if end < 0 else min(end, path.stat().st_size)
    out = []
    with open(path, "rb") as fh:
        while start < size:
            end = start + chunk_bytes
            if end < size:
                fh.seek(end)
                fh.readline()
                end = min(fh.tell(), size)
            else:
                end = size
            out.append(Chunk(domain, split, str(path), start, end))
            start = end
    return out


def _start_method() -> str:
    """fork when safe and cheap (Linux, no other threads: the CLI); else spawn (macOS, or a TUI thread)."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "spawn"


def default_workers() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return os.cpu_count() or 1


def _summary(stats: dict[str, dict[str, int]], prefix: Path, seconds: float) -> dict[str, Any]:
    train, held = stats["train"], stats["heldout"]
    # Tokens and documents encoded in this call (a shard appended to holds more than was encoded now).
    text_tokens = train["new_tokens"] + held["new_tokens"] - train["new_docs"] - held["new_docs"]
    chars = train["chars"] + held["chars"]
    return {
        "path": str(prefix),
        "tokens": train["tokens"],
        "docs": train["docs"],
        "chars": train["chars"],
        "heldout_tokens": held["tokens"],
        "heldout_docs": held["docs"],
        "heldout_chars": held["chars"],
        "chars_per_token": round(chars / text_tokens, 4) if text_tokens else 0.0,
        "seconds": round(seconds, 3),
    }


def pretokenize(
    raw_dir: Path,
    tok_dir: Path,
    tokenizer_path: Path,
    domains: list[str],
    workers: int | None = None,
    progress: ProgressFn | None = None,
    *,
    chunk_bytes: int | None = None,
    start_method: str | None = None,
    plan: dict[str, dict] | None = None,
) -> dict[str, dict[str, Any]]:
    """Encode `raw_dir/<d>.jsonl` and `raw_dir/heldout/<d>.jsonl` into `tok_dir/<d>` and `tok_dir/heldout/<d>` shards.

    Returns per domain: tokens, docs, chars (training split; EOS counted in tokens), the same for
    held-out, chars_per_token (text tokens, EOS not counted, both splits) and seconds. `progress`
    gets (domain, bytes done, bytes total). `chunk_bytes` and `start_method` are for tests and benchmarks.
    `plan` (engine.data.pipeline.shard_plan) gives per domain a mode (full, append, keep) and the byte
    ranges of the two corpus files to encode; without it every domain is encoded whole.
    """
    from engine.data.tokenizer import Tokenizer

    raw_dir, tok_dir, tokenizer_path = Path(raw_dir), Path(tok_dir), Path(tokenizer_path)
    domains = list(dict.fromkeys(domains))
    profile = raw_dir.parent.name if raw_dir.name == "raw" else "PROFILE"
    if not tokenizer_path.exists():
        raise TokenizerError(f"{tokenizer_path}: no such tokenizer (run `fcwork tokenizer train {profile}` first)")
    tok = Tokenizer.load(tokenizer_path)
    plan = plan or {d: {"mode": "full", "train": [0, -1], "heldout": [0, -1]} for d in domains}
    inputs: list[tuple[str, str, Path]] = []
    spans: dict[tuple[str, str], tuple[int, int]] = {}
    for d in domains:
        for split, path in (("train", raw_dir / f"{d}.jsonl"), ("heldout", raw_dir / "heldout" / f"{d}.jsonl")):
            if not path.is_file():
                raise DataError(f"{path}: missing corpus file for domain {d!r} (run `fcwork data build {profile}` first)")
            start, end = plan[d][split]
            end = path.stat().st_size if end < 0 else end
            spans[(d, split)] = (start, end)
            inputs.append((d, split, path))
    total_bytes = sum(spans[(d, s)][1] - spans[(d, s)][0] for d, s, _ in inputs)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise DataError(f"pretokenize: workers {workers}: expected a positive integer")
    if chunk_bytes is None:
        chunk_bytes = min(max(total_bytes // (workers * CHUNKS_PER_WORKER), MIN_CHUNK_BYTES), MAX_CHUNK_BYTES)
    chunks = [c for d, split, p in inputs for c in _chunks(d, split, p, chunk_bytes, *spans[(d, split)])]
    dtype = token_dtype(tok.vocab_size).str
    init_args = (str(tokenizer_path), tok.eos_id, dtype)
    say = progress or (lambda label, done, total: None)
    domain_total = {d: sum(spans[(d, s)][1] - spans[(d, s)][0] for dd, s, _ in inputs if dd == d) for d in domains}
    domain_done = dict.fromkeys(domains, 0)
    for d in domains:
        say(d, 0, domain_total[d])

    pool = None
    if workers == 1 or len(chunks) < 2 or total_bytes < min(SMALL_INPUT_BYTES, 2 * chunk_bytes):
        enc = functools.partial(encode_chunk, tok.sp, tok.eos_id, np.dtype(dtype))
        results: Iterator[tuple] = map(enc, chunks)
    else:
        # An executor, not mp.Pool: a worker that dies (OOM killer) raises here instead of hanging.
        pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=mp.get_context(start_method or _start_method()),
                                   initializer=_init_worker, initargs=init_args)
        results = pool.map(_encode_chunk, chunks)

    out: dict[str, dict[str, Any]] = {}
    stats: dict[str, dict[str, dict[str, int]]] = {}
    try:
        pending = iter(zip(chunks, results))  # in submission order, whatever the worker count
        for d, split, path in inputs:
            if split == "train":
                started = time.perf_counter()
            prefix = tok_dir / d if split == "train" else tok_dir / "heldout" / d
            mode = plan[d]["mode"]
            if mode == "keep" or (mode == "append" and spans[(d, split)][0] == spans[(d, split)][1]):
                old = open_shard(prefix, expected_hash=tok.hash)
                stats.setdefault(d, {})[split] = {"tokens": old.n_tokens, "docs": old.n_docs, "chars": 0,
                                                  "new_tokens": 0, "new_docs": 0}
                if split == "heldout":
                    out[d] = _summary(stats[d], tok_dir / d, time.perf_counter() - started)
                continue
            with ShardWriter(prefix, tok.vocab_size, tok.hash, tok.eos_id, append=mode == "append") as writer:
                before_tokens, before_docs = writer.n_tokens, writer.n_docs
                n_chunks = sum(1 for c in chunks if (c.domain, c.split) == (d, split))
                chars = 0
                for _ in range(n_chunks):
                    try:
                        chunk, result = next(pending)
                    except BrokenProcessPool:
                        raise DataError(f"{path}: an encoder process died (out of memory? try --workers 1)") from None
                    if result[0] == "bad":
                        _, offset, reason = result
                        raise DataError(f"{chunk.path}: line {_line_number(chunk.path, offset)}: {reason}")
                    _, tokens, lengths, n_chars = result
                    writer.add_encoded(tokens, lengths)
                    chars += n_chars
                    domain_done[d] += chunk.end - chunk.start
                    say(d, domain_done[d], domain_total[d])
                info = writer.close()
            stats.setdefault(d, {})[split] = {"tokens": info.n_tokens, "docs": info.n_docs, "chars": chars,
                                              "new_tokens": info.n_tokens - before_tokens,
                                              "new_docs": info.n_docs - before_docs}
            if split == "heldout":
                out[d] = _summary(stats[d], tok_dir / d, time.perf_counter() - started)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return out
