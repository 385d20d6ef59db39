"""Image-text data of a profile: its image-text sources decoded and resized once into image shards,
captions tokenized into token shards, a held-out split of pairs; each redone only when out of date.

Layout, per image size (a stage's tower asks for its size; `data.image_size` is built by
`fcwork data prepare`), under `data/<profile>/img/<size>px/`:

    <domain>.img, <domain>.pairs           training images and pairs (engine.data.imageshards)
    <domain>.captions.jsonl                one line per pair: {"text", "source", "meta"} (meta: ground truth)
    <domain>.cap.bin, <domain>.cap.idx     caption tokens, document k = pair k (engine.data.shards)
    heldout/<domain>.*                     the same for the held-out pairs
    manifest.json                          per domain: counts, skips by reason, identity, build_id
    stamp.json                             the tokenizer hash and build_id the caption shards were made from

A domain is rebuilt when its `identity` changes (its sources, the seed, the held-out fraction, the
size, the pixel limit); its caption shards are re-encoded when the build_id or the tokenizer
changes. The split is by image content (a hash of the decoded pixels), so every caption of an
image lands on the same side and an identical image seen twice is kept once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from engine.atomic import atomic_write_text
from engine.data.corpus import is_heldout
from engine.data.imagesources import BUILTIN_IMAGES
from engine.data.imageshards import FORMAT_VERSION, ImageShard, ImageShardWriter, image_paths, open_images
from engine.data.shards import Shard, ShardWriter, open_shard, shard_counts
from engine.errors import DataError, ShardError
from engine.profile import Profile
from engine.workspace import Workspace

ProgressFn = Callable[[str, int, int], None]
MANIFEST, STAMP = "manifest.json", "stamp.json"


def _noop(label: str, done: int, total: int) -> None:
    pass


def image_dir(ws: Workspace, profile: Profile, size: int) -> Path:
    """`data/<profile>/img/<size>px/`."""
    return ws.data_dir(profile.name) / "img" / f"{size}px"


def sizes_wanted(profile: Profile, extra: int | None = None) -> list[int]:
    """Image sizes to build: `data.image_size`, and `extra` (a stage's tower) when given."""
    return sorted({profile.data.image_size} | ({extra} if extra else set()))


@dataclass
class ImageDomainSummary:
    """What the build wrote for one image-text domain (a manifest entry)."""

    domain: str
    size: int
    images: int = 0
    pairs: int = 0
    heldout_images: int = 0
    heldout_pairs: int = 0
    caption_bytes: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)  # images kept per source
    identity: str = ""
    build_id: str = ""
    seconds: float = 0.0


def domain_identity(profile: Profile, domain: str, size: int) -> str:
    """Digest of what decides a domain's images and pairs (never the mix or the tokenizer)."""
    key = {
        "sources": [{k: v for k, v in asdict(s).items() if k != "optional"}
                    for s in profile.sources if s.domain == domain and s.is_image],
        "seed": profile.profile.seed, "heldout_fraction": profile.data.heldout_fraction, "size": size,
        "max_image_pixels": profile.data.max_image_pixels, "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_image_manifest(ws: Workspace, profile: Profile, size: int | None = None) -> dict | None:
    """The image build's manifest for `size` (default `data.image_size`) as plain data, or None."""
    try:
        data = json.loads((image_dir(ws, profile, size or profile.data.image_size) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plan_images(ws: Workspace, profile: Profile, size: int, rebuild: bool = False) -> dict[str, str]:
    """Per image-text domain: "build" (new, settings changed, files missing) or "keep"."""
    out = image_dir(ws, profile, size)
    done = (read_image_manifest(ws, profile, size) or {}).get("domains", {})
    plan = {}
    for dom in profile.image_domains:
        prev = done.get(dom) or {}
        have = all(p.exists() for sub in (out, out / "heldout") for p in image_paths(sub / dom)) and \
            (out / f"{dom}.captions.jsonl").exists() and (out / "heldout" / f"{dom}.captions.jsonl").exists()
        fresh = prev.get("identity") == domain_identity(profile, dom, size)
        plan[dom] = "keep" if fresh and have and not rebuild else "build"
    return plan


class _Split:
    """One side (training or held-out) of a domain being built: image shard and caption lines, in temp files."""

    def __init__(self, prefix: Path, size: int) -> None:
        self.writer = ImageShardWriter(prefix, size)
        self.captions_path = prefix.with_name(prefix.name + ".captions.jsonl")
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.captions_path.name}.", suffix=".tmp", dir=prefix.parent)
        self.fh = os.fdopen(fd, "w", encoding="utf-8")

    def add(self, pixels, captions: list[str], source: str, meta: dict) -> int:
        k = self.writer.add_image(pixels)
        nbytes = 0
        for text in captions:
            data = text.encode("utf-8")
            nbytes += len(data)
            self.writer.add_pair(k, len(data))
            self.fh.write(json.dumps({"text": text, "source": source, "meta": meta}, ensure_ascii=False) + "\n")
        return nbytes

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.writer.close()
        os.replace(self.tmp, self.captions_path)

    def abort(self) -> None:
        self.writer.abort()
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def build_domain(profile: Profile, domain: str, size: int, out: Path, progress: ProgressFn = _noop) -> ImageDomainSummary:
    """Read the domain's image-text sources, decode and letterbox every image to `size`, split by
    content, and write both sides (renamed into place only when whole)."""
    from engine.data.imagesources import decode_image, iter_image_source
    from engine.data.sources import SourceStats

    start = time.perf_counter()
    summary = ImageDomainSummary(domain, size, identity=domain_identity(profile, domain, size), build_id=uuid.uuid4().hex)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    splits = [_Split(out / domain, size), _Split(out / "heldout" / domain, size)]
    skipped: Counter = Counter()
    seen: set[bytes] = set()
    base_dir = profile.path.parent if profile.path else None
    sources = [s for s in profile.sources if s.domain == domain and s.is_image]
    # A bar when every source says how many images it gives at most (max_docs, or a built-in's 600).
    caps = [s.max_docs or (BUILTIN_IMAGES if s.builtin else 0) for s in sources]
    expected = sum(caps) if all(caps) else 0
    label = f"images {domain}"
    if not expected:
        progress(f"{label}: decoding", 0, 0)
    try:
        for src in sources:
            stats = SourceStats()
            kept = 0
            for sample in iter_image_source(src, stats, base_dir, seed=profile.profile.seed):
                pixels = decode_image(sample.image, size, profile.data.max_image_pixels)
                if isinstance(pixels, str):
                    stats.skip(pixels)
                    continue
                digest = hashlib.sha256(pixels.tobytes()).digest()
                if digest in seen:
                    summary.duplicates += 1
                    continue
                seen.add(digest)
                held = is_heldout(digest, profile.data.heldout_fraction)
                nbytes = splits[held].add(pixels, sample.captions, src.name, sample.meta)
                if held:
                    summary.heldout_images += 1
                    summary.heldout_pairs += len(sample.captions)
                else:
                    summary.images += 1
                    summary.pairs += len(sample.captions)
                    summary.caption_bytes += nbytes
                kept += 1
                if expected and kept % 64 == 0:
                    progress(label, min(summary.images + summary.heldout_images, expected), expected)
            summary.sources[src.name] = kept
            skipped.update(stats.skipped)
            summary.problems += stats.problems
        for split in splits:
            split.close()
        if expected:
            progress(label, expected, expected)
    except BaseException:
        for split in splits:
            split.abort()
        raise
    summary.skipped = dict(sorted(skipped.items()))
    summary.seconds = round(time.perf_counter() - start, 2)
    return summary


def build_images(ws: Workspace, profile: Profile, size: int | None = None, progress: ProgressFn = _noop,
                 rebuild: bool = False) -> dict[str, ImageDomainSummary]:
    """Build the image-text domains that are out of date at `size` (default `data.image_size`), keep
    the rest; the manifest is written last, atomically. Returns the summaries of every domain."""
    from engine.data.corpus import check_sources_found

    size = size or profile.data.image_size
    out = image_dir(ws, profile, size)
    plan = plan_images(ws, profile, size, rebuild)
    profile_dir = profile.path.parent if profile.path else None
    check_sources_found(profile, [s for s in profile.sources if s.is_image and plan.get(s.domain) == "build"], profile_dir)
    previous = (read_image_manifest(ws, profile, size) or {}).get("domains", {})
    summaries: dict[str, ImageDomainSummary] = {}
    for dom, action in plan.items():
        if action == "keep":
            known = {k: v for k, v in previous[dom].items() if k in ImageDomainSummary.__dataclass_fields__}
            summaries[dom] = ImageDomainSummary(**known)
        else:
            summaries[dom] = build_domain(profile, dom, size, out, progress)
            total = summaries[dom].images + summaries[dom].heldout_images
            if not total:
                raise DataError(f"{profile.path or profile.name}: domain {dom}: no image-text pair could be read "
                                f"({'; '.join(summaries[dom].problems) or _skips(summaries[dom].skipped)})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MANIFEST, json.dumps({
        "profile": profile.name, "size": size, "actions": {d: "built" if a == "build" else "kept" for d, a in plan.items()},
        "domains": {d: asdict(s) for d, s in summaries.items()},
    }, indent=2) + "\n")
    return summaries


def _skips(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in skipped.items()) or "no samples"


def _stamp(out: Path) -> dict:
    try:
        data = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def captions_plan(ws: Workspace, profile: Profile, size: int, tokenizer_hash: str) -> dict[str, str]:
    """Per image-text domain built at `size`: "encode" (caption shards missing or stale) or "keep"."""
    out = image_dir(ws, profile, size)
    domains = (read_image_manifest(ws, profile, size) or {}).get("domains", {})
    stamp = _stamp(out)
    done = stamp.get("domains", {}) if stamp.get("tokenizer_hash") == tokenizer_hash else {}
    plan = {}
    for dom, m in domains.items():
        ok = done.get(dom) == m.get("build_id")
        for prefix, pairs in ((out / f"{dom}.cap", m.get("pairs")), (out / "heldout" / f"{dom}.cap", m.get("heldout_pairs"))):
            try:
                ok = ok and shard_counts(prefix)[1] == pairs
            except ShardError:
                ok = False
        plan[dom] = "keep" if ok else "encode"
    return plan


def encode_captions(ws: Workspace, profile: Profile, size: int | None = None, progress: ProgressFn = _noop,
                    force: bool = False) -> dict[str, str]:
    """Caption token shards (document k = pair k) with the profile's tokenizer, for domains whose
    images or tokenizer changed; returns the plan that was carried out."""
    from engine.data.tokenizer import Tokenizer

    size = size or profile.data.image_size
    out = image_dir(ws, profile, size)
    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    if not tok_path.exists():
        raise DataError(f"{tok_path}: no tokenizer yet (run `fcwork tokenizer train {profile.name}` first)")
    tok = Tokenizer.load(tok_path)
    plan = captions_plan(ws, profile, size, tok.hash)
    if force:
        plan = {d: "encode" for d in plan}
    domains = (read_image_manifest(ws, profile, size) or {}).get("domains", {})
    for dom, action in plan.items():
        if action != "encode":
            continue
        for sub in (out, out / "heldout"):
            with ShardWriter(sub / f"{dom}.cap", tok.vocab_size, tok.hash, tok.eos_id) as writer:
                with open(sub / f"{dom}.captions.jsonl", encoding="utf-8") as fh:
                    lines = [json.loads(line)["text"] for line in fh if line.strip()]
                for k in range(0, len(lines), 256):
                    for ids in tok.encode_batch(lines[k:k + 256]):
                        writer.add(ids)
                    progress(f"captions {dom}", k, len(lines))
                progress(f"captions {dom}", len(lines), len(lines))
    stamp = {"tokenizer_hash": tok.hash,
             "domains": {d: m.get("build_id") for d, m in domains.items()}}
    atomic_write_text(out / STAMP, json.dumps(stamp) + "\n")
    return plan


def images_are_current(ws: Workspace, profile: Profile, size: int | None = None) -> bool:
    """True when neither images nor caption shards at `size` need work (no image domains: True)."""
    size = size or profile.data.image_size
    if not profile.image_domains:
        return True
    if any(a != "keep" for a in plan_images(ws, profile, size).values()):
        return False
    from engine.data.tokenizer import file_hash

    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    return tok_path.exists() and all(a == "keep" for a in captions_plan(ws, profile, size, file_hash(tok_path)).values())


def prepare_images(ws: Workspace, profile: Profile, size: int | None = None, progress: ProgressFn = _noop,
                   force: bool = False) -> bool:
    """Images then caption shards at `size`, each only when out of date; True when anything ran.
    What a stage calls (with its tower's image size) before it opens `ImageTextData`."""
    if not profile.image_domains:
        return False
    size = size or profile.data.image_size
    if not force and images_are_current(ws, profile, size):
        return False
    build_images(ws, profile, size, progress, rebuild=force)
    encode_captions(ws, profile, size, progress, force=force)
    return True


@dataclass
class ImagePairs:
    """One side (training or held-out) of an image-text domain, open: memory-mapped images, pairs
    and caption tokens. Pair p is (image `shard.pair_image(p)`, caption `captions.doc(p)`)."""

    domain: str
    shard: ImageShard
    captions: Shard

    @property
    def n_pairs(self) -> int:
        return self.shard.n_pairs

    def image(self, p: int):
        """uint8 [size, size, 3] of pair p's image (a read-only memory-mapped view)."""
        return self.shard.image(self.shard.pair_image(p))

    def caption(self, p: int):
        """Pair p's caption tokens (no EOS)."""
        return self.captions.doc(p)

    def caption_bytes(self, p: int) -> int:
        """UTF-8 bytes of pair p's caption (for bits per byte)."""
        return int(self.shard.pairs[p, 1])


def open_pairs(prefix: Path, domain: str, size: int, tokenizer_hash: str | None = None,
               vocab_size: int | None = None) -> ImagePairs:
    """Open `<prefix>.img/.pairs` and `<prefix>.cap.bin/.idx`; ShardError when they do not belong together."""
    shard = open_images(prefix, expected_size=size)
    captions = open_shard(prefix.with_name(prefix.name + ".cap"), expected_hash=tokenizer_hash, expected_vocab=vocab_size)
    if captions.n_docs != shard.n_pairs:
        raise ShardError(f"{prefix}.cap.bin: {captions.n_docs} captions for {shard.n_pairs} pairs (stale): "
                         "run `fcwork data prepare`")
    return ImagePairs(domain, shard, captions)


def pair_records(ws: Workspace, profile: Profile, domain: str, size: int | None = None,
                 heldout: bool = True) -> list[dict]:
    """The captions of a domain's pairs in pair order: {"text", "source", "meta"}, meta holding a
    built-in's ground truth (a diagram's `fen` and `turn`; a chart's `kind`, `labels`, `values`)
    for the probes; held-out side by default."""
    out = image_dir(ws, profile, size or profile.data.image_size)
    path = (out / "heldout" if heldout else out) / f"{domain}.captions.jsonl"
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run `fcwork data prepare {profile.name}`)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def open_image_data(ws: Workspace, profile: Profile, size: int | None = None, heldout: bool = False,
                    tokenizer_hash: str | None = None, vocab_size: int | None = None) -> dict[str, ImagePairs]:
    """Every image-text domain of the profile at `size`, training side (or held-out), ready for
    `ImageTextSampler`; one-line ShardError when something is missing or stale."""
    size = size or profile.data.image_size
    out = image_dir(ws, profile, size)
    base = out / "heldout" if heldout else out
    return {d: open_pairs(base / d, d, size, tokenizer_hash, vocab_size) for d in profile.image_domains}
