"""The mix sampler: for every sequence index, a domain drawn by the mix in force, then a window of
that domain's shard; both keyed by a counter-based hash of (seed, index), so any batch can be
recomputed from its indices alone (a resumed run sees the same data, a mix change acts at once).

No torch here: the trainer turns the int64 arrays into tensors.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from engine.errors import DataError, ShardError
from engine.data.chat_template import assistant_mask, last_state
from engine.data.shards import Shard

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
# Stream tags: the domain draw and the window draw of one sequence use independent hashes.
DOMAIN_STREAM, WINDOW_STREAM = 0x646F6D61696E, 0x77696E646F77


def _splitmix_scalar(x: int) -> int:
    """SplitMix64's finaliser on a Python int (used for the per-stream keys)."""
    x &= MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _finalise(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array, in place (wrapping multiplication)."""
    z ^= z >> np.uint64(30)
    z *= MIX1
    z ^= z >> np.uint64(27)
    z *= MIX2
    z ^= z >> np.uint64(31)
    return z


def stream_keys(seed: int) -> np.ndarray:
    """The two SplitMix64 keys [[domain], [window]] of a seed, as a (2, 1) uint64 array."""
    return np.array(
        [[_splitmix_scalar((seed & MASK64) * GOLDEN + tag)] for tag in (DOMAIN_STREAM, WINDOW_STREAM)],
        dtype=np.uint64,
    )


def hash_indices(seed: int | np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent uint64 hashes of (seed, i) per index: (domain stream, window stream).

    Each is output number i of a SplitMix64 generator keyed by (seed, stream): counter-based, so
    the value for index i never depends on which other indices are hashed with it. `seed` may be
    the precomputed `stream_keys(seed)`.
    """
    keys = seed if isinstance(seed, np.ndarray) else stream_keys(seed)
    z = np.asarray(indices, dtype=np.uint64) * np.uint64(GOLDEN)  # wraps mod 2**64, as SplitMix64 does
    z = keys + z[None, :]
    _finalise(z)
    return z[0], z[1]


def _check_weights(weights: Mapping[str, Any], where: str) -> dict[str, float]:
    """A copy of a mix as floats; one-line DataError for a bad name, a negative/non-finite weight or an all-zero mix."""
    if not isinstance(weights, Mapping) or not weights:
        raise DataError(f"{where}: expected a table of domain weights, got {weights!r}")
    out: dict[str, float] = {}
    for name, w in weights.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: domain name {name!r}: expected a non-empty string")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise DataError(f"{where}: weight of {name!r} is {w!r}: expected a number >= 0")
        out[name] = float(w)
    if sum(out.values()) <= 0:
        raise DataError(f"{where}: every weight is 0: expected at least one domain with a weight > 0")
    return out


class MixSchedule:
    """The domain mix as a list of (start_step, weights), sorted by start; a later entry wins from its step on."""

    def __init__(self, entries: Iterable[tuple[int, Mapping[str, float]]] = ()) -> None:
        self._starts: list[int] = []
        self._weights: list[dict[str, float]] = []
        for step, weights in entries:
            self.add(step, weights)

    @classmethod
    def constant(cls, weights: Mapping[str, float]) -> "MixSchedule":
        """One mix from step 0."""
        return cls([(0, weights)])

    def add(self, step: int, weights: Mapping[str, float]) -> None:
        """Put `weights` in force from `step` on, dropping any entry that started at or after it."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise DataError(f"mix schedule: start step {step!r}: expected an integer >= 0")
        w = _check_weights(weights, f"mix at step {step}")
        cut = bisect.bisect_left(self._starts, step)
        del self._starts[cut:], self._weights[cut:]
        self._starts.append(step)
        self._weights.append(w)

    def entry_at(self, step: int) -> tuple[int, dict[str, float]]:
        """(start step, raw weights) of the entry in force at `step` (the first entry before it starts)."""
        if not self._starts:
            raise DataError("mix schedule is empty: expected at least one (step, weights) entry")
        k = max(bisect.bisect_right(self._starts, step) - 1, 0)
        return self._starts[k], dict(self._weights[k])

    def weights_at(self, step: int) -> dict[str, float]:
        """The normalised mix in force at `step`."""
        w = self.entry_at(step)[1]
        total = sum(w.values())
        return {k: v / total for k, v in w.items()}

    def entries(self) -> list[tuple[int, dict[str, float]]]:
        return [(s, dict(w)) for s, w in zip(self._starts, self._weights)]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-able form for checkpoints: [{"step": s, "weights": {...}}, ...]."""
        return [{"step": s, "weights": dict(w)} for s, w in zip(self._starts, self._weights)]

    @classmethod
    def from_list(cls, data: Iterable[Any]) -> "MixSchedule":
        """Inverse of `to_list` (also accepts [step, weights] pairs)."""
        sched = cls()
        if not isinstance(data, (list, tuple)):
            raise DataError(f"mix schedule: expected a list of {{step, weights}} entries, got {type(data).__name__}")
        for k, item in enumerate(data):
            if isinstance(item, Mapping) and "step" in item and "weights" in item:
                sched.add(item["step"], item["weights"])
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                sched.add(item[0], item[1])
            else:
                raise DataError(f"mix schedule entry {k}: expected {{\"step\": int, \"weights\": {{...}}}}, got {item!r}")
        return sched

    def __len__(self) -> int:
        return len(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MixSchedule) and self.entries() == other.entries()

    def __repr__(self) -> str:
        return f"MixSchedule({self.entries()!r})"


@dataclass(frozen=True)
class ChatIds:
    """The token ids the SFT mask needs: `roles` = (assistant, end, (system, user, assistant))."""

    eos_id: int
    assistant_id: int
    end_id: int
    role_ids: tuple[int, ...]

    @property
    def roles(self) -> tuple:
        return self.assistant_id, self.end_id, self.role_ids


class Sampler:
    """Serves batches of windows drawn from per-domain shards by a (possibly changing) mix.

    `domains` is the sorted list of shard names, so domain ids do not depend on dict order;
    `domain_ids` returned by `batch` index into it. A mix may name a domain without a shard, or
    with fewer tokens than one window, only with weight 0; otherwise DataError (at construction
    for the schedule's entries, at the first batch of a later-added entry, or from `check`).
    """

    def __init__(self, shards: Mapping[str, Shard], seq_len: int, seed: int, schedule: MixSchedule) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise DataError(f"sampler: seq_len {seq_len!r}: expected a positive integer")
        if not shards:
            raise DataError("sampler: no shards given: expected at least one domain")
        self.seq_len = seq_len
        self.seed = int(seed)
        self._keys = stream_keys(self.seed)
        self.schedule = schedule
        self.domains: list[str] = sorted(shards)
        self.shards = {d: shards[d] for d in self.domains}
        self._index = {d: k for k, d in enumerate(self.domains)}
        self._windows = np.array([max(self.shards[d].n_tokens - seq_len, 0) for d in self.domains], dtype=np.uint64)
        # Plain ndarray views (memmap subclass dispatch is slow) and their rows of seq_len + 1 tokens.
        self._tokens = [np.asarray(self.shards[d].tokens) for d in self.domains]
        self._rows = [
            sliding_window_view(t, seq_len + 1) if t.size > seq_len else None for t in self._tokens
        ]
        self._cum_cache: dict[tuple, np.ndarray] = {}
        self._vocab = min(self.shards[d].vocab_size for d in self.domains)
        for _, weights in schedule.entries():
            self.check(weights)

    def check(self, weights: Mapping[str, float]) -> None:
        """Refuse a mix this sampler cannot serve: a weighted domain with no shard or too few tokens."""
        for name, w in weights.items():
            if w <= 0:
                continue
            if name not in self._index:
                have = ", ".join(self.domains)
                raise DataError(f"mix: domain {name!r} has weight {w:g} but no shard (shards: {have})")
            n = self.shards[name].n_tokens
            if n < self.seq_len + 1:
                raise DataError(
                    f"{self.shards[name].path}: domain {name!r} has {n:,} tokens, fewer than one window of "
                    f"{self.seq_len + 1:,} (seq_len {self.seq_len} + 1): add data or set its weight to 0"
                )

    def _cumulative(self, weights: dict[str, float]) -> np.ndarray:
        """Cumulative probabilities in `domains` order; zero-weight domains get empty intervals."""
        key = tuple(sorted(weights.items()))
        cum = self._cum_cache.get(key)
        if cum is None:
            self.check(weights)
            total = sum(weights.values())
            p = np.array([weights.get(d, 0.0) / total for d in self.domains], dtype=np.float64)
            cum = np.cumsum(p)
            last = int(np.flatnonzero(p > 0)[-1])
            cum[last:] = 1.0  # no rounding gap after the last weighted domain
            self._cum_cache[key] = cum
        return cum

    def draw(self, step: int, first_index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(domain_ids int64, window starts int64) of sequences first_index .. first_index + count - 1."""
        if first_index < 0 or count < 0:
            raise DataError(f"sampler: first_index {first_index} and count {count}: expected integers >= 0")
        cum = self._cumulative(self.schedule.entry_at(step)[1])
        h_dom, h_win = hash_indices(self._keys, np.arange(first_index, first_index + count, dtype=np.uint64))
        u = (h_dom >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # uniform in [0, 1)
        dom = np.searchsorted(cum, u, side="right")
        starts = h_win % self._windows[dom]
        return dom.astype(np.int64), starts.astype(np.int64)

    def batch(self, step: int, first_index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int64 [count, seq_len + 1], domain_ids int64 [count]) of sequences first_index.. .

        Rows are gathered one fancy index per domain present (no loop per sequence).
        """
        dom, starts = self.draw(step, first_index, count)
        out = np.empty((count, self.seq_len + 1), dtype=np.int64)
        counts = np.bincount(dom, minlength=len(self.domains))
        present = np.flatnonzero(counts).tolist()
        if len(present) == 1:
            out[:] = self._rows[present[0]][starts]
        else:
            order = np.argsort(dom, kind="stable")
            ends = np.cumsum(counts).tolist()
            for d in present:
                sel = order[ends[d] - int(counts[d]) : ends[d]]
                out[sel] = self._rows[d][starts[sel]]
        if out.size and int(out.max()) >= self._vocab:
            self._refuse(out, dom, starts)
        return out, dom

    def packed_batch(self, step: int, first_index: int, count: int, chat: "ChatIds") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens int64 [count, seq_len + 1], loss mask bool [same], domain_ids [count]) for chat SFT.

        Each row starts at a whole document (the hash picks which) and takes the documents after it
        while they fit whole; the rest is EOS with no loss. A document longer than a row gives a window
        (at a hashed offset). The mask marks assistant turns and their `<|end|>` (conversations), or
        every token of a document that is not a conversation (`chat_template.assistant_mask`). Like
        `batch`, every row depends only on (seed, index, mix in force).
        """
        dom, _ = self.draw(step, first_index, count)
        h_win = hash_indices(self._keys, np.arange(first_index, first_index + count, dtype=np.uint64))[1]
        L = self.seq_len + 1
        out = np.full((count, L), chat.eos_id, dtype=np.int64)
        mask = np.zeros((count, L), dtype=bool)
        for r in range(count):
            d = int(dom[r])
            tokens, starts = self._tokens[d], self.shards[self.domains[d]].doc_starts
            n_docs = len(starts) - 1
            k = int(h_win[r] % np.uint64(n_docs))
            filled, first = 0, True
            while filled < L:
                a, b = int(starts[k]), int(starts[k + 1])
                size = b - a
                if first and size > L:
                    offset = int((h_win[r] >> np.uint64(32)) % np.uint64(size - L + 1))
                    inside = last_state(tokens[a:a + offset], *chat.roles) if offset else False
                    ids = tokens[a + offset:a + offset + L]
                    out[r] = ids
                    mask[r] = assistant_mask(ids, *chat.roles, inside=inside)
                    break
                if not first and size > L - filled:
                    break
                ids = tokens[a:b]
                out[r, filled:filled + size] = ids
                mask[r, filled:filled + size] = assistant_mask(ids, *chat.roles)
                filled += size
                first = False
                k = (k + 1) % n_docs
        if out.size and int(out.max()) >= self._vocab:
            self._refuse(out, dom, np.zeros(count, dtype=np.int64))
        return out, mask, dom

    def _refuse(self, out: np.ndarray, dom: np.ndarray, starts: np.ndarray) -> None:
        """A window holds an id the model cannot embed (a shard damaged after it was opened): name it."""
        row = int(np.argmax((out >= self._vocab).any(axis=1)))
        shard = self.shards[self.domains[int(dom[row])]]
        at = int(starts[row]) + int(np.argmax(out[row] >= self._vocab))
        raise ShardError(f"{shard.path}.bin: token id {int(out[row].max()):,} at position {at:,} is outside the "
                         f"vocabulary 0..{self._vocab - 1:,} (a damaged shard): run `fcwork data verify`, then pretokenize again")

    def epochs(self, tokens_drawn: Mapping[str, int]) -> dict[str, float]:
        """Epochs consumed per domain: tokens drawn from it over its shard's tokens."""
        out = {}
        for name, n in tokens_drawn.items():
            shard = self.shards.get(name)
            if shard is None:
                raise DataError(f"sampler: domain {name!r} has no shard (shards: {', '.join(self.domains)})")
            out[name] = n / shard.n_tokens if shard.n_tokens else 0.0
        return out
