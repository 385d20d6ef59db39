"""Corpus build: per-domain quotas from the mix, exact dedup, a held-out split, written atomically.

Domains are built in parallel processes; each draws round-robin from its sources so a source
that runs dry (or an `optional` one that matches no files) is made up by the others, and a
shortfall is reported, not hidden; a source that matches no files and is not optional fails the build.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from engine.atomic import atomic_dir, atomic_write_text
from engine.errors import DataError
from engine.profile import Profile, SourceConfig
from engine.data.sources import SourceStats, describe_source, iter_source

PROGRESS_EVERY = 64_000  # characters between progress messages from a worker


@dataclass
class DomainSummary:
    """What the build wrote for one domain."""

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
    sources: dict[str, int] = field(default_factory=dict)
    digest: str = ""

    @property
    def shortfall_chars(self) -> int:
        return max(0, self.quota_chars - self.chars - self.heldout_chars)

    def est_tokens(self, chars_per_token: float) -> int:
        return int(self.chars / chars_per_token)


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


def config_digest(profile: Profile) -> str:
    """Digest of everything in a profile that changes what the corpus build writes."""
    data = profile.to_dict()
    key = {k: data[k] for k in ("mix", "data", "sources")}
    key["sources"] = [{k: v for k, v in src.items() if k != "optional"} for src in key["sources"]]  # read the same
    key["seed"] = profile.profile.seed
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def domain_quotas(profile: Profile) -> dict[str, int]:
    """Characters wanted per domain (training plus held-out) from target tokens times the mix."""
    mix = profile.normalised_mix()
    total = profile.data.target_tokens * profile.data.chars_per_token
    return {d: int(total * w) for d, w in mix.items() if w > 0}


def is_heldout(text_hash: bytes, fraction: float) -> bool:
    """Deterministic split by content: the same document always lands on the same side."""
    return int.from_bytes(text_hash[:8], "big") / 2**64 < fraction


def _round_robin(iterators: list[Iterator[str]]) -> Iterator[tuple[int, str]]:
    live = list(enumerate(iterators))
    while live:
        for item in list(live):
            i, it = item
            try:
                yield i, next(it)
            except StopIteration:
                live.remove(item)


def build_domain(
    domain: str, sources: list[SourceConfig], quota: int, out_dir: Path, profile_dir: Path | None,
    seed: int, heldout_fraction: float, min_doc_chars: int, max_doc_chars: int,
    progress: Callable[[str, int], None] | None = None,
) -> DomainSummary:
    """Fill one domain's quota from its sources into out_dir/<domain>.jsonl and out_dir/heldout/<domain>.jsonl."""
    summary = DomainSummary(domain=domain, quota_chars=quota)
    stats = [SourceStats() for _ in sources]
    # Ask each source for the whole quota: any of them may have to fill in for the others.
    iters = [
        iter_source(s, st, profile_dir, seed=seed, max_chars=int(quota * 1.2) + 1, max_doc_chars=max_doc_chars)
        for s, st in zip(sources, stats)
    ]
    seen: set[bytes] = set()
    digest = hashlib.sha256()
    (out_dir / "heldout").mkdir(parents=True, exist_ok=True)
    last_report = 0
    with open(out_dir / f"{domain}.jsonl", "w", encoding="utf-8") as train_fh, \
            open(out_dir / "heldout" / f"{domain}.jsonl", "w", encoding="utf-8") as held_fh:
        for i, text in _round_robin(iters):
            if len(text) < min_doc_chars:
                summary.too_short += 1
                continue
            h = hashlib.sha256(text.encode("utf-8")).digest()
            if h in seen:
                summary.duplicates += 1
                continue
            seen.add(h)
            line = json.dumps({"text": text, "source": sources[i].name}, ensure_ascii=False) + "\n"
            digest.update(line.encode("utf-8"))
            # By content hash, topped up in order so a domain of few large documents still holds
            # out its share of characters; both rules are deterministic for a given input.
            behind = summary.heldout_chars < heldout_fraction * (summary.chars + summary.heldout_chars)
            if behind or is_heldout(hashlib.sha256(h + str(seed).encode()).digest(), heldout_fraction):
                held_fh.write(line)
                summary.heldout_docs += 1
                summary.heldout_chars += len(text)
            else:
                train_fh.write(line)
                summary.docs += 1
                summary.chars += len(text)
            summary.sources[sources[i].name] = summary.sources.get(sources[i].name, 0) + 1
            done = summary.chars + summary.heldout_chars
            if progress and done - last_report >= PROGRESS_EVERY:
                progress(domain, min(done, quota))
                last_report = done
            if done >= quota:
                break
    for st in stats:
        for reason, n in st.skipped.items():
            summary.skipped[reason] = summary.skipped.get(reason, 0) + n
        summary.problems.extend(st.problems)
    summary.digest = digest.hexdigest()
    if progress:
        progress(domain, quota)
    return summary


def _build_domain_job(args: tuple) -> DomainSummary:
    *job, progress_q = args

    def report(domain: str, chars: int) -> None:
        progress_q.put((domain, chars))

    return build_domain(*job, progress=report)


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
    progress: Callable[[str, int, int], None] | None = None,
) -> CorpusSummary:
    """Build every domain with a positive weight; replace raw_dir only once all of it is written."""
    start = time.perf_counter()
    quotas = domain_quotas(profile)
    by_domain = {d: [s for s in profile.sources if s.domain == d] for d in quotas}
    no_source = [d for d, srcs in by_domain.items() if not srcs]
    if no_source:
        raise DataError(f"{profile.path or profile.name}: mix.{no_source[0]}: has a weight but no source in [[sources]]")
    profile_dir = profile.path.parent if profile.path else None
    check_sources_found(profile, [s for d in quotas for s in by_domain[d]], profile_dir)
    workers = max(1, min(workers or os.cpu_count() or 1, len(quotas)))
    d = profile.data
    summaries: dict[str, DomainSummary] = {}
    with atomic_dir(raw_dir) as tmp:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            progress_q = manager.Queue()
            jobs = [
                (dom, by_domain[dom], quotas[dom], tmp, profile_dir, profile.profile.seed,
                 d.heldout_fraction, d.min_doc_chars, d.max_doc_chars, progress_q)
                for dom in sorted(quotas, key=lambda x: -quotas[x])
            ]
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(_build_domain_job, job): job[0] for job in jobs}
                pending = set(futures)
                while pending:
                    try:
                        dom, chars = progress_q.get(timeout=0.2)
                        if progress:
                            progress(dom, chars, quotas[dom])
                    except queue.Empty:
                        pass
                    for fut in [f for f in pending if f.done()]:
                        pending.discard(fut)
                        summaries[futures[fut]] = fut.result()
            while not progress_q.empty() and progress:
                dom, chars = progress_q.get()
                progress(dom, chars, quotas[dom])
        ordered = {dom: summaries[dom] for dom in quotas}
        corpus_digest = hashlib.sha256("".join(s.digest for s in ordered.values()).encode()).hexdigest()
        summary = CorpusSummary(
            profile=profile.name, seed=profile.profile.seed, target_tokens=d.target_tokens,
            chars_per_token=d.chars_per_token, heldout_fraction=d.heldout_fraction,
            domains=ordered, seconds=round(time.perf_counter() - start, 2), digest=corpus_digest,
            config_digest=config_digest(profile),
        )
        atomic_write_text(tmp / "manifest.json", summary.to_json())
    return summary
