"""Pretokenization throughput: `engine.data.pretokenize` (process pool, and workers=1 in-process) against
the natural single-process loop (`sp.encode(doc)` per document, written with `write_shard`).

All three encode the same corpus (~15 MB of Python stdlib source and English prose, made
locally) with the same 8000-vocab BPE tokenizer and must produce identical tokens. Rounds
alternate between the contenders so machine noise hits all alike; the best round of each is
reported with the ratios (baseline time / ours).

    flock /tmp/bench.lock .venv/bin/python bench/pretokenize.py [--mb 15] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine.data.pretokenize import default_workers, pretokenize  # noqa: E402
from engine.data.shards import open_shard, write_shard  # noqa: E402
from engine.data.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

DOMAINS = ["code", "prose"]
CACHE = Path(__file__).resolve().parent / "out" / "pretokenize"


def make_corpus(raw: Path, mb: float, seed: int = 0) -> int:
    """code.jsonl from stdlib files, prose.jsonl from pydoc topics and sentences recombined from them."""
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in stdlib.rglob("*.py") if "site-packages" not in f.parts and "test" not in f.parts)
    rng.shuffle(files)
    code_budget, prose_budget = int(mb * 0.65e6), int(mb * 0.35e6)
    code: list[str] = []
    used = 0
    for f in files:
        if used >= code_budget:
            break
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        code.append(text)
        used += len(text)
    import pydoc_data.topics as topics

    paragraphs = [p.strip() for t in topics.topics.values() for p in t.split("\n\n") if len(p.strip()) > 80]
    sentences = [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+", p) if 20 < len(s) < 400]
    prose = list(paragraphs)
    used = sum(map(len, prose))
    while used < prose_budget:  # documents of 5-40 sentences drawn from the whole pool
        doc = " ".join(rng.choice(sentences) for _ in range(rng.randint(5, 40)))
        prose.append(doc)
        used += len(doc)
    for name, docs in (("code", code), ("prose", prose)):
        held = docs[: max(1, len(docs) // 50)]
        for path, part in ((raw / f"{name}.jsonl", docs[len(held):]), (raw / "heldout" / f"{name}.jsonl", held)):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                for text in part:
                    fh.write(json.dumps({"text": text, "source": name}) + "\n")
    return sum(p.stat().st_size for p in raw.rglob("*.jsonl"))


def baseline(raw: Path, out: Path, model: Path, tok: Tokenizer) -> None:
    """The plain loop: one process, one `sp.encode(text)` per document, `write_shard` per file."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    for d in DOMAINS:
        for src, prefix in ((raw / f"{d}.jsonl", out / d), (raw / "heldout" / f"{d}.jsonl", out / "heldout" / d)):
            with open(src, encoding="utf-8") as fh:
                docs = (sp.encode(json.loads(line)["text"]) for line in fh if line.strip())
                write_shard(prefix, docs, tok.vocab_size, tok.hash, tok.eos_id)


def threads_reference(raw: Path, out: Path, model: Path, tok: Tokenizer, threads: int) -> None:
    """For comparison only: one process, SentencePiece's own threads over ~1 MB batches of documents."""
    import sentencepiece as spm

    from engine.data.shards import ShardWriter

    sp = spm.SentencePieceProcessor(model_file=str(model))
    for d in DOMAINS:
        for src, prefix in ((raw / f"{d}.jsonl", out / d), (raw / "heldout" / f"{d}.jsonl", out / "heldout" / d)):
            with open(src, encoding="utf-8") as fh, ShardWriter(prefix, tok.vocab_size, tok.hash, tok.eos_id) as w:
                batch: list[str] = []
                size = 0
                for line in fh:
                    if line.strip():
                        batch.append(json.loads(line)["text"])
                        size += len(batch[-1])
                    if size >= 1 << 20:
                        for ids in sp.encode(batch, num_threads=threads, return_type="numpy"):
                            w.add(ids)
                        batch, size = [], 0
                for ids in sp.encode(batch, num_threads=threads, return_type="numpy") if batch else []:
                    w.add(ids)


def tokens_of(tok_dir: Path) -> list[np.ndarray]:
    return [np.asarray(open_shard(tok_dir / sub / d).tokens) for d in DOMAINS for sub in ("", "heldout")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=15.0, help="corpus size in MB of text")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--fresh", action="store_true", help="rebuild the cached corpus and tokenizer")
    args = ap.parse_args()

    cache = CACHE / f"{args.mb:g}mb-v{args.vocab}"
    if args.fresh:
        shutil.rmtree(cache, ignore_errors=True)
    raw, model = cache / "raw", cache / "bench.model"
    if not model.exists():
        t = time.perf_counter()
        size = make_corpus(raw, args.mb)
        print(f"corpus: {size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        train_tokenizer(raw, model, DOMAINS, args.vocab, sample_chars=2_000_000, seed=0)
        print(f"tokenizer: BPE {args.vocab} trained in {time.perf_counter() - t:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in raw.rglob("*.jsonl"))
    tok = Tokenizer.load(model)

    runs = {
        "baseline loop": lambda out: baseline(raw, out, model, tok),
        "ours workers=1": lambda out: pretokenize(raw, out, model, DOMAINS, workers=1),
        f"ours workers={args.workers}": lambda out: pretokenize(raw, out, model, DOMAINS, workers=args.workers),
        f"spm threads={args.workers}": lambda out: threads_reference(raw, out, model, tok, args.workers),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    reference = None
    with tempfile.TemporaryDirectory(prefix="fc-pretok-") as tmp:
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                out = Path(tmp) / f"{r}-{name.replace(' ', '_')}"
                t = time.perf_counter()
                runs[name](out)
                times[name].append(time.perf_counter() - t)
                toks = tokens_of(out)
                if reference is None:
                    reference = toks
                assert all(np.array_equal(a, b) for a, b in zip(reference, toks)), f"{name}: tokens differ"
                shutil.rmtree(out)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)

    n_tokens = sum(a.size for a in reference)
    best = {k: min(v) for k, v in times.items()}
    base = best["baseline loop"]
    print("(spm threads = in-process sentencepiece encode(list, num_threads=N): a reference, not a contender)")
    print(f"device=cpu cores={os.cpu_count()} affinity={default_workers()} python={platform.python_version()} "
          f"numpy={np.__version__} text={size / 1e6:.1f} MB tokens={n_tokens:,} vocab={tok.vocab_size}")
    for name, sec in best.items():
        print(f"{name:>16}: {sec:6.2f} s  {size / 1e6 / sec:6.2f} MB/s  {n_tokens / sec / 1e6:5.2f} M tok/s  "
              f"ratio vs baseline {base / sec:.2f}x")


if __name__ == "__main__":
    main()
