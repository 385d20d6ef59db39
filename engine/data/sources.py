"""Manifest sources: stream documents out of text, jsonl, parquet, webdataset or built-in sources.

Bad data never stops a build: a bad document or file is skipped and counted by reason,
and a source that cannot be read at all is reported as one readable line.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from engine.profile import SourceConfig

READ_LIMIT = 1 << 20  # longest line read at once; a longer line is skipped in pieces


@dataclass
class SourceStats:
    """What reading a source produced: documents kept, skips by reason, and problems."""

    files: int = 0
    docs: int = 0
    chars: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n


def source_paths(src: SourceConfig, base_dir: Path | None = None) -> list[Path]:
    """Files a file source's glob matches, sorted; relative globs are taken from `base_dir`."""
    pattern = os.path.expanduser(src.path)
    if base_dir is not None and not os.path.isabs(pattern):
        pattern = str(base_dir / pattern)
    return [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]


def iter_source(
    src: SourceConfig, stats: SourceStats, base_dir: Path | None = None, seed: int = 0,
    max_chars: int = 0, max_doc_chars: int = 200_000,
) -> Iterator[str]:
    """Yield the source's documents (clean UTF-8, no NUL bytes, at most `max_doc_chars` each)."""
    if src.builtin is not None:
        from engine.data.builtin import iter_builtin

        budget = min(x for x in (max_chars, src.max_chars) if x) if (max_chars or src.max_chars) else 10_000_000
        docs = iter_builtin(src.builtin, seed, budget)
    else:
        paths = source_paths(src, base_dir)
        if not paths:
            stats.problems.append(f"source {src.name}: no files match {src.path}")
            return
        stats.files = len(paths)
        reader = {"text": _read_text, "jsonl": _read_jsonl, "parquet": _read_parquet,
                  "webdataset": _read_webdataset}[src.format]
        docs = (doc for path in paths for doc in reader(path, src, stats, max_doc_chars))
    for doc in docs:
        if "\x00" in doc:
            stats.skip("NUL bytes")
            continue
        if len(doc) > max_doc_chars:
            stats.skip("too long")
            continue
        if not doc.strip():
            stats.skip("empty")
            continue
        stats.docs += 1
        stats.chars += len(doc)
        yield doc
        if src.max_docs and stats.docs >= src.max_docs:
            return
        if src.max_chars and stats.chars >= src.max_chars:
            return


def _decode(data: bytes, stats: SourceStats) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        stats.skip("invalid UTF-8")
        return None


def _lines(fh, stats: SourceStats) -> Iterator[bytes]:
    """Lines of a binary file; a line longer than READ_LIMIT is skipped without holding it whole."""
    while True:
        line = fh.readline(READ_LIMIT)
        if not line:
            return
        if len(line) == READ_LIMIT and not line.endswith(b"\n"):
            while True:
                rest = fh.readline(READ_LIMIT)
                if not rest or rest.endswith(b"\n"):
                    break
            stats.skip("line too long")
            continue
        yield line


def _read_text(path: Path, src: SourceConfig, stats: SourceStats, max_doc_chars: int) -> Iterator[str]:
    try:
        size = path.stat().st_size
        if size == 0:
            stats.skip("empty file")
            return
        with open(path, "rb") as fh:
            if src.split == "file":
                if size > max_doc_chars * 4:
                    stats.skip("too long")
                    return
                text = _decode(fh.read(), stats)
                if text is not None:
                    yield text
                return
            para: list[str] = []
            for raw in _lines(fh, stats):
                line = _decode(raw, stats)
                if line is None:
                    continue
                if line.strip():
                    para.append(line)
                    continue
                if para:
                    yield "".join(para).rstrip("\n")
                    para = []
            if para:
                yield "".join(para).rstrip("\n")
    except OSError as exc:
        stats.problems.append(f"source {src.name}: {path}: cannot read ({exc.strerror})")


def _read_jsonl(path: Path, src: SourceConfig, stats: SourceStats, max_doc_chars: int) -> Iterator[str]:
    try:
        with open(path, "rb") as fh:
            kept = missing = 0
            for raw in _lines(fh, stats):
                if not raw.strip():
                    continue
                line = _decode(raw, stats)
                if line is None:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    stats.skip("invalid JSON")
                    continue
                value = obj.get(src.field) if isinstance(obj, dict) else None
                if not isinstance(value, str):
                    missing += 1
                    stats.skip(f"no string field {src.field!r}")
                    continue
                kept += 1
                yield value
            if missing and not kept:
                stats.problems.append(f"source {src.name}: {path}: no line has a string field {src.field!r}")
    except OSError as exc:
        stats.problems.append(f"source {src.name}: {path}: cannot read ({exc.strerror})")


def _read_parquet(path: Path, src: SourceConfig, stats: SourceStats, max_doc_chars: int) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        stats.problems.append(f"source {src.name}: {path}: not a readable parquet file ({exc})")
        return
    names = pf.schema_arrow.names
    if src.field not in names:
        stats.problems.append(
            f"source {src.name}: {path}: no column {src.field!r} (columns: {', '.join(names) or 'none'})"
        )
        return
    col_type = pf.schema_arrow.field(src.field).type
    if not (pa.types.is_string(col_type) or pa.types.is_large_string(col_type)):
        stats.problems.append(f"source {src.name}: {path}: column {src.field!r} is {col_type}, expected strings")
        return
    try:
        for batch in pf.iter_batches(columns=[src.field], batch_size=512):
            for value in batch.column(0).to_pylist():
                if value is None:
                    stats.skip("null value")
                    continue
                yield value
    except (OSError, pa.ArrowException) as exc:
        stats.problems.append(f"source {src.name}: {path}: stopped reading, file is damaged ({exc})")


TEXT_MEMBER_SUFFIXES = ("txt", "text", "md")


def _read_webdataset(path: Path, src: SourceConfig, stats: SourceStats, max_doc_chars: int) -> Iterator[str]:
    wanted = TEXT_MEMBER_SUFFIXES if src.field == "text" else (src.field,)
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(3)[:2] in (b"\x1f\x8b", b"BZ", b"\xfd7")
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                suffix = member.name.rsplit("/", 1)[-1].split(".", 1)[-1].lower()
                if suffix not in wanted:
                    stats.skip("non-text member")
                    continue
                if member.size > max_doc_chars * 4:
                    stats.skip("too long")
                    continue
                fh = tar.extractfile(member)
                data = fh.read() if fh else b""
                if len(data) < member.size:
                    raise EOFError("unexpected end of data")
                text = _decode(data, stats)
                if text is not None:
                    yield text
            if not compressed:
                # A whole tar ends with two zero blocks; a cut between members leaves none.
                with open(path, "rb") as fh:
                    fh.seek(tar.offset)
                    tail = fh.read(1024)
                if len(tail) < 1024 or tail.strip(b"\0"):
                    raise EOFError("no end-of-archive marker")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        stats.problems.append(f"source {src.name}: {path}: truncated or damaged tar ({exc}); kept what came before")


@dataclass
class SourceInfo:
    """A source as the manifest pane lists it: where it stands on disk before any build."""

    name: str
    domain: str
    format: str
    path: str
    status: str  # "ok", "missing" (glob matches nothing) or "built-in"
    files: int
    bytes: int

    def est_tokens(self, chars_per_token: float) -> int:
        """Rough token count from the bytes on disk (UTF-8 text is about one byte a character)."""
        return int(self.bytes / chars_per_token)


def describe_source(src: SourceConfig, base_dir: Path | None = None) -> SourceInfo:
    """Files and bytes a source's glob matches now; cheap (stat only), so a UI can call it often."""
    if src.builtin is not None:
        return SourceInfo(src.name, src.domain, src.format, "", "built-in", 0, 0)
    paths = source_paths(src, base_dir)
    size = 0
    for p in paths:
        try:
            size += p.stat().st_size
        except OSError:
            pass
    return SourceInfo(src.name, src.domain, src.format, src.path, "ok" if paths else "missing", len(paths), size)
