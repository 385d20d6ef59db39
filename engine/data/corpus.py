"""Corpus build: per-domain budgets from `[data]` (never from the mix), per-source weights with
fallbacks, exact dedup, a held-out split, growth by appending.

What the corpus is does not depend on the mix: the mix decides how training samples it, so a mix
edit never rebuilds data or retrains a tokenizer. Each domain's budget is `data.shares` of
`data.target_tokens` (equal shares over the domains with sources when no shares are given).

Within a domain, every source has a `weight` (its share of the domain's characters, normalised
over the domain's sources that are not `fallback`); the build always draws next from the source
furthest below its share, so shares hold to within a document. A source that runs dry leaves its
share to the others; `fallback` sources (the built-ins of fc450) are drawn from only once every
other source of the domain has run dry.

A domain is rebuilt only when its own settings change (its sources, the seed, the split and
length limits). Raising its budget grows it: each source resumes from its saved cursor, new
documents are appended to the training file, dedup covers what is already there (by the saved
hashes, not by reading the text again), and the held-out split stays exactly as it was.
Files are written as temp files and renamed (rebuilt domains) or appended past the length the
manifest records (grown domains); the manifest, written last and atomically, is the commit point.
A file source whose glob matches nothing fails the build unless it is `optional`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import queue
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from engine.atomic import atomic_write_text
from engine.data.sources import SourceCursor, SourceStats, describe_source, iter_source
from engine.errors import DataError
from engine.profile import Profile, SourceConfig

PROGRESS_EVERY = 64_000  # characters between progress messages from a worker
RECENT_HASHES = 1 << 16  # dedup hashes kept in a set before they are merged into the sorted array


@dataclass
class DomainSummary:
    """What the build wrote for one domain, and what a later build needs to grow it."""

    domain: str
    quota_chars: int
    docs: int = 0
    chars: int = 0
    heldout_docs: int = 0
    heldout_chars: int = 0
    duplicates: int = 0
    too_short: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)  # documents kept per source
    source_chars: dict[str, int] = field(default_factory=dict)  # characters kept per source
    digest: str = ""
    identity: str = ""  # digest of the settings this domain was built with (domain_identity)
    build_id: str = ""  # new at every rebuild, kept while the domain grows: shards key on it
    train_bytes: int = 0  # committed length of <domain>.jsonl (a crashed append leaves more: cut off)
    heldout_bytes: int = 0
    hashes: int = 0  # committed entries of <domain>.hashes
    cursors: dict[str, dict] = field(default_factory=dict)  # per source: SourceCursor as data
    exhausted: bool = False  # every source ran dry: a larger budget cannot be met from these sources

    @property
    def shortfall_chars(self) -> int:
        return max(0, self.quota_chars - self.chars - self.heldout_chars)

    def est_tokens(self, chars_per_token: float) -> int:
        return int(self.chars / chars_per_token)

    @classmethod
    def from_dict(cls, data: dict) -> "DomainSummary":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class CorpusSummary:
    """The whole build, saved as raw/manifest.json."""

    profile: str
    seed: int
    target_tokens: int
    chars_per_token: float
    heldout_fraction: float
    domains: dict[str, DomainSummary]
    seconds: float = 0.0
    digest: str = ""
    config_digest: str = ""
    actions: dict[str, str] = field(default_factory=dict)  # per domain: built, grown or kept (this build)

    def to_json(self) -> str:
        data = asdict(self)
        for name, d in self.domains.items():
            data["domains"][name]["shortfall_chars"] = d.shortfall_chars
            data["domains"][name]["est_tokens"] = d.est_tokens(self.chars_per_token)
        return json.dumps(data, indent=2) + "\n"


def read_manifest(raw_dir: Path) -> dict | None:
    """The last build's summary as plain data, or None when there is none."""
    try:
        return json.loads((raw_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def domain_shares(profile: Profile) -> dict[str, float]:
    """Each corpus domain's share of target_tokens, normalised: `data.shares`, else equal over the
    [mix] domains (any weight, 0 included) that have a source. Image-text domains are never text
    corpus domains (engine.data.imagedata builds them)."""
    images = set(profile.image_domains)
    if profile.data.shares:
        raw = {d: w for d, w in profile.data.shares.items() if w > 0 and d not in images}
    else:
        with_source = {s.domain for s in profile.sources if not s.is_image}
        raw = {d: 1.0 for d in profile.mix if d in with_source}
    total = sum(raw.values())
    return {d: w / total for d, w in raw.items()} if total else {}


def domain_quotas(profile: Profile) -> dict[str, int]:
    """Characters wanted per domain (training plus held-out): target tokens x chars per token x share."""
    total = profile.data.target_tokens * profile.data.chars_per_token
    return {d: int(total * share) for d, share in domain_shares(profile).items()}


def domain_identity(profile: Profile, domain: str) -> str:
    """Digest of what decides a domain's documents and their order: its sources, the seed, the
    held-out fraction and the length limits. Budgets (target_tokens, shares) and the mix are not in it."""
    d = profile.data
    key = {
        # `optional` decides only whether a missing glob fails the build, not what is read; `image`
        # is always empty for a text domain (left out, so corpora built before it existed stay current)
        "sources": [{k: v for k, v in asdict(s).items() if k not in ("optional", "image")}
                    for s in profile.sources if s.domain == domain],
        "seed": profile.profile.seed,
        "heldout_fraction": d.heldout_fraction,
        "min_doc_chars": d.min_doc_chars,
        "max_doc_chars": d.max_doc_chars,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def config_digest(profile: Profile) -> str:
    """Digest of everything in a profile that decides what the corpus build writes (never the mix)."""
    quotas = domain_quotas(profile)
    key = {dom: [domain_identity(profile, dom), q] for dom, q in sorted(quotas.items())}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def is_heldout(text_hash: bytes, fraction: float) -> bool:
    """Deterministic split by content: the same document always lands on the same side."""
    return int.from_bytes(text_hash[:8], "big") / 2**64 < fraction


class SeenHashes:
    """Exact dedup in bounded memory per document: 8 bytes of each document's SHA-256, recent ones in a
    set, older ones merged into a sorted uint64 array (a set of Python ints would cost ~10x more)."""

    def __init__(self, existing: np.ndarray | None = None) -> None:
        self.sorted = np.unique(existing.astype(np.uint64)) if existing is not None and existing.size else \
            np.zeros(0, np.uint64)
        self.recent: set[int] = set()

    def add(self, h: int) -> bool:
        """Record h; False when it was seen before."""
        if h in self.recent:
            return False
        if self.sorted.size:
            i = int(np.searchsorted(self.sorted, np.uint64(h)))
            if i < self.sorted.size and int(self.sorted[i]) == h:
                return False
        self.recent.add(h)
        if len(self.recent) >= RECENT_HASHES:
            merged = np.fromiter(self.recent, np.uint64, len(self.recent))
            self.sorted = np.union1d(self.sorted, merged)
            self.recent.clear()
        return True


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def pick_source(sources: list[SourceConfig], live: set[int], kept_chars: list[int]) -> int | None:
    """The live source furthest below its weight's share: primaries first, fallbacks only when no primary is live."""
    primary = [i for i in live if not sources[i].fallback]
    pool = primary or list(live)
    if not pool:
        return None
    return min(pool, key=lambda i: (kept_chars[i] / sources[i].weight, i))


def build_domain(
    domain: str, sources: list[SourceConfig], quota: int, out_dir: Path, profile_dir: Path | None,
    seed: int, heldout_fraction: float, min_doc_chars: int, max_doc_chars: int,
    progress: Callable[[str, int], None] | None = None, previous: dict | None = None, identity: str = "",
) -> DomainSummary:
    """Fill one domain's quota from its sources. Fresh (previous None): writes temp files beside
    out_dir/<domain>.jsonl, heldout/<domain>.jsonl and <domain>.hashes for the caller to rename.
    Growing (previous = the manifest's entry): appends to out_dir/<domain>.jsonl and <domain>.hashes
    in place, resuming every source from its cursor; the held-out file is not touched."""
    train_path = out_dir / f"{domain}.jsonl"
    held_path = out_dir / "heldout" / f"{domain}.jsonl"
    hash_path = out_dir / f"{domain}.hashes"
    (out_dir / "heldout").mkdir(parents=True, exist_ok=True)
    if previous is None:
        summary = DomainSummary(domain=domain, quota_chars=quota, identity=identity, build_id=uuid.uuid4().hex[:16])
        existing = None
        targets = [_tmp_name(p) for p in (train_path, held_path, hash_path)]
        modes = ("wb", "wb", "wb")
    else:
        summary = DomainSummary.from_dict(previous)
        summary.quota_chars = quota
        summary.problems, summary.skipped = [], dict(summary.skipped)
        _truncate(train_path, summary.train_bytes)  # drop what a crashed append left past the commit
        _truncate(hash_path, summary.hashes * 8)
        existing = np.fromfile(hash_path, dtype="<u8", count=summary.hashes) if summary.hashes else None
        targets = [train_path, None, hash_path]
        modes = ("ab", "", "ab")
    growing = previous is not None
    seen = SeenHashes(existing)
    stats = [SourceStats(cursor=SourceCursor.from_dict(summary.cursors.get(s.name))) for s in sources]
    kept_chars = [summary.source_chars.get(s.name, 0) for s in sources]
    live = {i for i, st in enumerate(stats) if not (sources[i].builtin is not None and st.cursor.exhausted)}
    iters = [iter_source(s, st, profile_dir, seed=seed, max_doc_chars=max_doc_chars) for s, st in zip(sources, stats)]
    digest = hashlib.sha256()
    last_report = done = summary.chars + summary.heldout_chars
    with contextlib.ExitStack() as stack:
        train_fh = stack.enter_context(open(targets[0], modes[0]))
        held_fh = stack.enter_context(open(targets[1], modes[1])) if not growing else None
        hash_fh = stack.enter_context(open(targets[2], modes[2]))
        while done < quota:
            i = pick_source(sources, live, kept_chars)
            if i is None:
                break
            try:
                text = next(iters[i])
            except StopIteration:
                live.discard(i)
                continue
            if len(text) < min_doc_chars:
                summary.too_short += 1
                continue
            h = hashlib.sha256(text.encode("utf-8")).digest()
            if not seen.add(int.from_bytes(h[:8], "little")):
                summary.duplicates += 1
                continue
            name = sources[i].name
            line = (json.dumps({"text": text, "source": name}, ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(line)
            hash_fh.write(h[:8])
            summary.hashes += 1
            # By content hash, topped up in order so a domain of few large documents still holds
            # out its share of characters; both rules are deterministic for a given input. A grown
            # domain keeps its held-out split as it was: new documents go to training.
            behind = summary.heldout_chars < heldout_fraction * (summary.chars + summary.heldout_chars)
            if not growing and (behind or is_heldout(hashlib.sha256(h + str(seed).encode()).digest(), heldout_fraction)):
                held_fh.write(line)
                summary.heldout_docs += 1
                summary.heldout_chars += len(text)
                summary.heldout_bytes += len(line)
            else:
                train_fh.write(line)
                summary.docs += 1
                summary.chars += len(text)
                summary.train_bytes += len(line)
            summary.sources[name] = summary.sources.get(name, 0) + 1
            kept_chars[i] += len(text)
            done += len(text)
            if progress and done - last_report >= PROGRESS_EVERY:
                progress(domain, min(done, quota))
                last_report = done
        for fh in (train_fh, held_fh, hash_fh):
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
    for it in iters:
        it.close()
    summary.exhausted = not live
    for s, st, kc in zip(sources, stats, kept_chars):
        for reason, n in st.skipped.items():
            summary.skipped[reason] = summary.skipped.get(reason, 0) + n
        summary.problems.extend(st.problems)
        summary.cursors[s.name] = st.cursor.to_dict()
        summary.source_chars[s.name] = kc
    new = digest.hexdigest()
    summary.digest = hashlib.sha256(f"{summary.digest}:{new}".encode()).hexdigest() if growing else new
    if progress:
        progress(domain, quota)
    return summary


def _build_domain_job(args: tuple) -> DomainSummary:
    *job, kw, progress_q = args

    def report(domain: str, chars: int) -> None:
        progress_q.put((domain, chars))

    return build_domain(*job, progress=report, **kw)


def plan_build(profile: Profile, raw_dir: Path, rebuild: bool = False, recheck: bool = True) -> dict[str, str]:
    """What a build would do per domain of the profile: "build" (new or its settings changed),
    "grow" (its budget is above what it holds and its sources may have more) or "keep".
    `recheck`: a domain whose sources ran dry is grown again (new files may have appeared)."""
    manifest = read_manifest(raw_dir) or {}
    done = manifest.get("domains", {})
    plan = {}
    for dom, quota in domain_quotas(profile).items():
        prev = done.get(dom)
        if rebuild or not prev or prev.get("identity") != domain_identity(profile, dom) or not _files_ok(raw_dir, dom, prev):
            plan[dom] = "build"
        elif prev.get("chars", 0) + prev.get("heldout_chars", 0) >= quota:
            plan[dom] = "keep"
        elif prev.get("exhausted") and not recheck:
            plan[dom] = "keep"
        else:
            plan[dom] = "grow"
    return plan


def _files_ok(raw_dir: Path, dom: str, prev: dict) -> bool:
    """The domain's files hold at least what the manifest committed (an append past it is cut off later)."""
    try:
        return ((raw_dir / f"{dom}.jsonl").stat().st_size >= prev.get("train_bytes", -1)
                and (raw_dir / "heldout" / f"{dom}.jsonl").stat().st_size >= prev.get("heldout_bytes", -1)
                and (raw_dir / f"{dom}.hashes").stat().st_size >= 8 * prev.get("hashes", -1))
    except OSError:
        return False


def check_domains(profile: Profile) -> None:
    """Every domain the profile's mixes weight has corpus data planned; one-line DataError otherwise."""
    origin = profile.path or profile.name
    shares = domain_shares(profile)
    with_source = {s.domain for s in profile.sources if not s.is_image}
    images = set(profile.image_domains)
    for dom in shares:
        if dom not in with_source:
            key = f"data.shares.{dom}: has a share" if profile.data.shares else f"mix.{dom}: has a weight"
            raise DataError(f"{origin}: {key} but no source in [[sources]]")
    for where, mix in [("mix", profile.mix)] + [(f"stages.{st.name}.mix", st.mix) for st in profile.stages]:
        for dom, w in mix.items():
            if w > 0 and dom not in shares and dom not in images:
                why = "no source in [[sources]]" if dom not in with_source else "no share in data.shares"
                raise DataError(f"{origin}: {where}.{dom}: has a weight but {why}")


def check_sources_found(profile: Profile, sources: list[SourceConfig], profile_dir: Path | None) -> None:
    """A file source whose glob matches nothing fails the build (a typo would otherwise leave its
    domain quietly filled by the others), unless the source says `optional = true`."""
    for src in sources:
        if not src.optional and describe_source(src, profile_dir).status == "missing":
            i = profile.sources.index(src)
            raise DataError(f"{profile.path or profile.name}: sources[{i}] ({src.name}): no files match {src.path!r} "
                            "(fix the path, or set optional = true to build without it)")


def build_corpus(
    profile: Profile, raw_dir: Path, workers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None, rebuild: bool = False, recheck: bool = True,
) -> CorpusSummary:
    """Build, grow or keep each domain (plan_build); the manifest is written last, atomically."""
    start = time.perf_counter()
    check_domains(profile)
    quotas = domain_quotas(profile)
    plan = plan_build(profile, raw_dir, rebuild=rebuild, recheck=recheck)
    manifest = read_manifest(raw_dir) or {}
    previous = {} if rebuild else manifest.get("domains", {})
    by_domain = {d: [s for s in profile.sources if s.domain == d] for d in quotas}
    profile_dir = profile.path.parent if profile.path else None
    check_sources_found(profile, [s for d in quotas for s in by_domain[d]], profile_dir)
    todo = [d for d in plan if plan[d] != "keep"]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    d = profile.data
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / "heldout").mkdir(exist_ok=True)
    summaries: dict[str, DomainSummary] = {}
    try:
        if todo:
            ctx = mp.get_context("spawn")
            with ctx.Manager() as manager:
                progress_q = manager.Queue()
                jobs = [
                    (dom, by_domain[dom], quotas[dom], raw_dir, profile_dir, profile.profile.seed,
                     d.heldout_fraction, d.min_doc_chars, d.max_doc_chars,
                     {"previous": previous.get(dom) if plan[dom] == "grow" else None,
                      "identity": domain_identity(profile, dom)}, progress_q)
                    for dom in sorted(todo, key=lambda x: -quotas[x])
                ]
                with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                    futures = {pool.submit(_build_domain_job, job): job[0] for job in jobs}
                    pending = set(futures)
                    while pending:
                        with contextlib.suppress(queue.Empty):
                            dom, chars = progress_q.get(timeout=0.2)
                            if progress:
                                progress(dom, chars, quotas[dom])
                        for fut in [f for f in pending if f.done()]:
                            pending.discard(fut)
                            summaries[futures[fut]] = fut.result()
                while not progress_q.empty() and progress:
                    dom, chars = progress_q.get()
                    progress(dom, chars, quotas[dom])
    except BaseException:
        for dom in todo:
            if plan[dom] == "build":
                for p in (raw_dir / f"{dom}.jsonl", raw_dir / "heldout" / f"{dom}.jsonl", raw_dir / f"{dom}.hashes"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(_tmp_name(p))
        raise
    for dom in todo:
        if plan[dom] == "build":
            for p in (raw_dir / f"{dom}.jsonl", raw_dir / "heldout" / f"{dom}.jsonl", raw_dir / f"{dom}.hashes"):
                os.replace(_tmp_name(p), p)
    ordered: dict[str, DomainSummary] = {}
    for dom in list(quotas) + [x for x in previous if x not in quotas]:  # domains no longer budgeted stay
        if dom in summaries:
            ordered[dom] = summaries[dom]
        elif dom in previous:
            kept = DomainSummary.from_dict(previous[dom])
            kept.quota_chars = quotas.get(dom, kept.quota_chars)
            ordered[dom] = kept
    corpus_digest = hashlib.sha256("".join(s.digest for s in ordered.values()).encode()).hexdigest()
    summary = CorpusSummary(
        profile=profile.name, seed=profile.profile.seed, target_tokens=d.target_tokens,
        chars_per_token=d.chars_per_token, heldout_fraction=d.heldout_fraction,
        domains=ordered, seconds=round(time.perf_counter() - start, 2), digest=corpus_digest,
        config_digest=config_digest(profile),
        actions={dom: {"build": "built", "grow": "grown", "keep": "kept"}[plan[dom]] for dom in plan},
    )
    atomic_write_text(raw_dir / "manifest.json", summary.to_json())
    return summary


def corpus_is_current(profile: Profile, raw_dir: Path) -> bool:
    """True when a build would keep every domain (sources that ran dry are not looked at again)."""
    return read_manifest(raw_dir) is not None and all(
        a == "keep" for a in plan_build(profile, raw_dir, recheck=False).values())
