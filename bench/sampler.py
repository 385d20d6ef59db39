"""Sampler throughput: tokens/s served by `Sampler.batch` against plain memmap slicing of the same windows.

Five domains with shards of ~20M tokens each are written to a temp dir. The baseline is the
obvious loop over precomputed windows, `np.stack([mm[s:s + L + 1] for s in starts])` converted
to int64, with the domains and starts our sampler drew (so it does no drawing of its own);
ours draws the domains and starts and gathers, from sequence indices alone. Rounds alternate;
the best round of each is reported with the ratio ours / baseline.

    flock /tmp/bench.lock .venv/bin/python bench/sampler.py [--tokens 20e6] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from engine.data.sampler import MixSchedule, Sampler  # noqa: E402
from engine.data.shards import open_shard, write_shard  # noqa: E402

MIX = {"science": 0.3, "code": 0.3, "chess": 0.15, "data": 0.2, "chat": 0.05}
BATCH = 32


def make_shards(folder: Path, n_tokens: int, vocab: int = 50_000) -> dict:
    rng = np.random.default_rng(0)
    digest = hashlib.sha256(b"bench").hexdigest()
    out = {}
    for k, name in enumerate(MIX):
        n_docs = n_tokens // 4096

        def docs():
            for _ in range(n_docs):
                yield rng.integers(3, vocab, 4095, dtype=np.uint16)

        write_shard(folder / name, docs(), vocab, digest, eos_id=2)
        shard = open_shard(folder / name, expected_hash=digest)
        int(np.asarray(shard.tokens)[::2048].sum())  # fault every page in, for both contenders alike
        out[name] = shard
    return out


def bench(shards: dict, seq_len: int, n_batches: int, rounds: int) -> dict[str, float]:
    sampler = Sampler(shards, seq_len, seed=1234, schedule=MixSchedule.constant(MIX))
    mms = [shards[d].tokens for d in sampler.domains]  # np.memmap objects
    plan = []
    for b in range(n_batches):
        dom, starts = sampler.draw(0, b * BATCH, BATCH)
        plan.append(list(zip(dom.tolist(), starts.tolist())))
    L = seq_len

    def ours() -> None:
        for b in range(n_batches):
            sampler.batch(0, b * BATCH, BATCH)

    def baseline() -> None:
        for windows in plan:
            np.stack([mms[d][s : s + L + 1] for d, s in windows]).astype(np.int64)

    a, _ = sampler.batch(0, 7 * BATCH, BATCH)
    assert np.array_equal(a, np.stack([mms[d][s : s + L + 1] for d, s in plan[7]]).astype(np.int64))
    best = {"ours": float("inf"), "baseline": float("inf")}
    for r in range(rounds):
        for name, fn in ((("ours", ours), ("baseline", baseline)) if r % 2 == 0 else (("baseline", baseline), ("ours", ours))):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    tokens = n_batches * BATCH * (L + 1)
    return {k: tokens / v for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=float, default=20e6, help="tokens per domain shard")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fc-sampler-") as tmp:
        t = time.perf_counter()
        shards = make_shards(Path(tmp), int(args.tokens))
        total = sum(s.n_tokens for s in shards.values())
        print(f"shards: 5 x {total / 5 / 1e6:.1f}M tokens (uint16) written in {time.perf_counter() - t:.1f} s", flush=True)
        print(f"device=cpu cores={os.cpu_count()} python={platform.python_version()} numpy={np.__version__} batch={BATCH}")
        for seq_len, n_batches in ((256, 4000), (2048, 800)):
            res = bench(shards, seq_len, n_batches, args.rounds)
            print(f"seq_len {seq_len:>5}: ours {res['ours'] / 1e6:7.1f} M tok/s   baseline {res['baseline'] / 1e6:7.1f} M tok/s"
                  f"   ratio {res['ours'] / res['baseline']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
