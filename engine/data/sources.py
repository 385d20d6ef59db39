"""Manifest sources: stream documents out of text, jsonl, parquet, webdataset, pgn or built-in sources,
local or behind an fsspec URL, plain or compressed (engine.data.files).

Bad data never stops a build: a bad document or file is skipped and counted by reason,
and a source that cannot be read at all is reported as one readable line.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from engine.data import files
from engine.data.records import RecordFormat, RecordSkip
from engine.errors import DataError
from engine.profile import SourceConfig

READ_LIMIT = 1 << 20  # longest line read at once; a longer line is skipped in pieces
PARQUET_BATCH = 512


@dataclass
class SourceCursor:
    """Where a source stands: files read to the end, the file being read and the position in it
    (bytes of its content for text, jsonl and pgn; [row group, row] for parquet; members for
    webdataset; documents for a built-in), and what it has yielded. Saved in the corpus manifest,
    so a growing build resumes each source where it stopped instead of reading it again."""

    done: list[str] = field(default_factory=list)
    file: str = ""
    pos: Any = 0
    docs: int = 0
    chars: int = 0
    exhausted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "SourceCursor":
        if not isinstance(data, dict):
            return cls()
        known = {k: data[k] for k in ("done", "file", "pos", "docs", "chars", "exhausted") if k in data}
        return cls(**known)


@dataclass
class SourceStats:
    """What reading a source produced: documents kept, skips by reason, problems, and where it stands."""

    files: int = 0
    docs: int = 0
    chars: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    cursor: SourceCursor = field(default_factory=SourceCursor)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n


def matched_paths(src: SourceConfig, base_dir: Path | None, stats: "SourceStats") -> list[str]:
    """A file source's files, sorted (a local glob relative to `base_dir`, or an fsspec URL), counted in
    `stats`; none (with the reason in stats.problems) when its path is bad or matches nothing."""
    try:
        paths = files.expand(src.path, base_dir)
    except DataError as exc:
        stats.problems.append(f"source {src.name}: {exc}")
        return []
    if not paths:
        stats.problems.append(f"source {src.name}: no files match {src.path}")
    stats.files = len(paths)
    return paths


def iter_source(
    src: SourceConfig, stats: SourceStats, base_dir: Path | None = None, seed: int = 0,
    max_chars: int = 0, max_doc_chars: int = 200_000,
) -> Iterator[str]:
    """Yield the source's documents (clean UTF-8, no NUL bytes, at most `max_doc_chars` each), from
    `stats.cursor` on; the cursor follows every document yielded. `max_chars` (0: none) stops early."""
    cur = stats.cursor
    if src.builtin is not None:
        docs = _iter_builtin(src, seed, cur)
    else:
        paths = matched_paths(src, base_dir, stats)
        if not paths:
            return
        docs = _iter_files(src, stats, paths, max_doc_chars)
    start_chars = cur.chars
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
        cur.docs += 1
        cur.chars += len(doc)
        yield doc
        if src.max_docs and cur.docs >= src.max_docs:
            return
        if src.max_chars and cur.chars >= src.max_chars:
            return
        if max_chars and cur.chars - start_chars >= max_chars:
            return


def _iter_builtin(src: SourceConfig, seed: int, cur: SourceCursor) -> Iterator[str]:
    from engine.data.builtin import builtin_source

    gen = builtin_source(src.builtin or "").generate(seed)
    try:
        for i, doc in enumerate(gen):
            if i < cur.pos:
                continue
            cur.pos = i + 1
            yield doc
        cur.exhausted = True
    finally:
        gen.close()


def _iter_files(src: SourceConfig, stats: SourceStats, paths: list[str], max_doc_chars: int) -> Iterator[str]:
    cur = stats.cursor
    reader = READERS[src.format]
    done = set(cur.done)
    for path in paths:
        if path in done:
            continue
        start = cur.pos if path == cur.file else 0
        cur.file, cur.pos = path, start
        try:
            for doc, pos in reader(path, src, stats, max_doc_chars, start):
                cur.pos = pos
                if doc is not None:
                    yield doc
        except DataError as exc:
            stats.problems.append(f"source {src.name}: {exc}")
        except files.STREAM_ERRORS as exc:
            stats.problems.append(f"source {src.name}: {path}: cannot read ({files.why(exc)}); kept what came before")
        cur.done.append(path)
        done.add(path)
        cur.file, cur.pos = "", 0
    cur.exhausted = True


def _decode(data: bytes, stats: SourceStats) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        stats.skip("invalid UTF-8")
        return None


def _lines(fh: IO[bytes], stats: SourceStats, pos: int) -> Iterator[tuple[bytes, int]]:
    """(line, position after it) of a binary stream; a line longer than READ_LIMIT is skipped whole."""
    while True:
        line = fh.readline(READ_LIMIT)
        if not line:
            return
        pos += len(line)
        if len(line) == READ_LIMIT and not line.endswith(b"\n"):
            while True:
                rest = fh.readline(READ_LIMIT)
                pos += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            stats.skip("line too long")
            continue
        yield line, pos


Item = tuple  # (document or None, position after it)


def _read_text(path: str, src: SourceConfig, stats: SourceStats, max_doc_chars: int, start: int) -> Iterator[Item]:
    if not files.compression(path) and files.size(path) == 0:
        stats.skip("empty file")
        return
    with files.open_stream(path) as fh:
        if src.split == "file":
            if start:
                return  # the file's one document was taken already
            data = fh.read(max_doc_chars * 4 + 1)
            if not data:
                stats.skip("empty file")
            elif len(data) > max_doc_chars * 4:
                stats.skip("too long")
            else:
                text = _decode(data, stats)
                if text is not None:
                    yield text, len(data)
            return
        pos = files.skip_to(fh, start)
        para: list[str] = []
        for raw, pos in _lines(fh, stats, pos):
            line = _decode(raw, stats)
            if line is None:
                continue
            if line.strip():
                para.append(line)
                continue
            if para:
                yield "".join(para).rstrip("\n"), pos
                para = []
        if para:
            yield "".join(para).rstrip("\n"), pos


def _read_jsonl(path: str, src: SourceConfig, stats: SourceStats, max_doc_chars: int, start: int) -> Iterator[Item]:
    fmt = RecordFormat.of(src.field, src.template, src.where)
    with files.open_stream(path) as fh:
        pos = files.skip_to(fh, start)
        kept = missing = 0
        for raw, pos in _lines(fh, stats, pos):
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
            doc = _render(fmt, obj, stats)
            if doc is None:
                missing += 1
                continue
            kept += 1
            yield doc, pos
        if missing and not kept and not start:
            what = f"a string field {src.field!r}" if not src.template else "the template's fields"
            stats.problems.append(f"source {src.name}: {path}: no line has {what}" +
                                  (" and matches where" if src.where else ""))


def _render(fmt: RecordFormat, record: Any, stats: SourceStats) -> str | None:
    if fmt.where and not (isinstance(record, dict) and fmt.keep(record)):
        stats.skip("filtered out by where")
        return None
    try:
        return fmt.render(record)
    except RecordSkip as exc:
        stats.skip(exc.reason)
        return None


def open_parquet(path: str, src: SourceConfig, columns: list[str], stats: SourceStats) -> tuple[IO[bytes], Any] | None:
    """(the open file, its pyarrow ParquetFile) when `path` is a readable parquet file with `columns`; else
    None, with why in stats.problems. The caller closes the file. A compressed path is a DataError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if files.compression(path):
        raise DataError(f"{path}: parquet compresses inside the file; expected a .parquet file, not {files.compression(path)}")
    fh = files.open_raw(path)
    try:
        pf = pq.ParquetFile(fh)
    except (OSError, pa.ArrowException) as exc:
        fh.close()
        stats.problems.append(f"source {src.name}: {path}: not a readable parquet file ({exc})")
        return None
    names = pf.schema_arrow.names
    absent = [c for c in columns if c not in names]
    if absent:
        fh.close()
        stats.problems.append(f"source {src.name}: {path}: no column {absent[0]!r} (columns: {', '.join(names) or 'none'})")
        return None
    return fh, pf


def _read_parquet(path: str, src: SourceConfig, stats: SourceStats, max_doc_chars: int, start: Any) -> Iterator[Item]:
    import pyarrow as pa

    fmt = RecordFormat.of(src.field, src.template, src.where)
    columns = fmt.columns
    opened = open_parquet(path, src, columns, stats)
    if opened is None:
        return
    fh, pf = opened
    try:
        plain = not src.template and not src.where and "." not in src.field
        if plain:
            col_type = pf.schema_arrow.field(src.field).type
            if not (pa.types.is_string(col_type) or pa.types.is_large_string(col_type) or pa.types.is_list(col_type)):
                stats.problems.append(f"source {src.name}: {path}: column {src.field!r} is {col_type}, expected strings")
                return
        first_group, first_row = (start if isinstance(start, list) and len(start) == 2 else (0, 0))
        try:
            for group in range(int(first_group), pf.num_row_groups):
                row = 0
                skip = int(first_row) if group == first_group else 0
                for batch in pf.iter_batches(batch_size=PARQUET_BATCH, row_groups=[group], columns=columns):
                    if row + batch.num_rows <= skip:
                        row += batch.num_rows
                        continue
                    records: list = batch.column(0).to_pylist() if plain else batch.to_pylist()
                    for rec in records:
                        row += 1
                        if row <= skip:
                            continue
                        if plain:
                            doc = rec if isinstance(rec, str) else _render(fmt, {src.field: rec}, stats)
                        else:
                            doc = _render(fmt, rec, stats)
                        if doc is not None:
                            yield doc, [group, row]
        except (OSError, pa.ArrowException) as exc:
            stats.problems.append(f"source {src.name}: {path}: stopped reading, file is damaged ({exc})")
    finally:
        fh.close()


TEXT_MEMBER_SUFFIXES = ("txt", "text", "md")
TAR_TAIL = 64 << 10


class _Tail(io.RawIOBase):
    """A stream passed through, counting its bytes and keeping the last few (to find the tar's end marker)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.n = 0
        self.tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.fh.read(len(b))
        n = len(data)
        b[:n] = data
        self.n += n
        self.tail = (self.tail + data)[-TAR_TAIL:]
        return n


def tar_members(path: str, start: int = 0) -> Iterator[tuple[int, tarfile.TarInfo, Callable[[], bytes]]]:
    """(member number from 1, member, read its bytes) of each file member of a (compressed, local or
    remote) tar past the first `start`, streamed; EOFError or tarfile.TarError when the tar is cut
    short or damaged (after the members before the damage were yielded). Shared by the text reader
    and the image-text reader (engine.data.imagesources)."""
    with files.open_stream(path) as raw:
        counted = _Tail(raw)
        index = 0
        with tarfile.open(fileobj=io.BufferedReader(counted), mode="r|") as tar:
            for member in tar:
                index += 1
                if index <= start or not member.isfile():
                    continue

                def read(member: tarfile.TarInfo = member) -> bytes:
                    fh = tar.extractfile(member)
                    data = fh.read() if fh else b""
                    if len(data) < member.size:
                        raise EOFError("unexpected end of data")
                    return data

                yield index, member, read
            end = tar.offset
        while counted.read(files.BLOCK):  # the rest: the end marker and the record padding
            pass
        after = counted.n - end
        # A whole tar ends with two zero blocks; a cut between members leaves none.
        if after < 1024 or (after <= len(counted.tail) and counted.tail[len(counted.tail) - after:][:1024].strip(b"\0")):
            raise EOFError("no end-of-archive marker")


def member_suffix(name: str) -> str:
    """WebDataset's suffix of a member: its file name after the first dot, lower case ("seg.png")."""
    return name.rsplit("/", 1)[-1].split(".", 1)[-1].lower()


def _read_webdataset(path: str, src: SourceConfig, stats: SourceStats, max_doc_chars: int, start: int) -> Iterator[Item]:
    wanted = TEXT_MEMBER_SUFFIXES if src.field == "text" else (src.field,)
    try:
        for index, member, read in tar_members(path, start):
            if member_suffix(member.name) not in wanted:
                stats.skip("non-text member")
                continue
            if member.size > max_doc_chars * 4:
                stats.skip("too long")
                continue
            text = _decode(read(), stats)
            if text is not None:
                yield text, index
    except (tarfile.TarError, EOFError) as exc:
        stats.problems.append(f"source {src.name}: {path}: truncated or damaged tar ({exc}); kept what came before")


def _read_pgn(path: str, src: SourceConfig, stats: SourceStats, max_doc_chars: int, start: int) -> Iterator[Item]:
    from engine.data.pgn import GameFilter, LineReader, iter_games

    game_filter = GameFilter(src.min_elo, tuple(src.time_control), tuple(src.results))
    with files.open_stream(path) as fh:
        lines = LineReader(fh, files.skip_to(fh, start), READ_LIMIT)
        kept = 0
        for doc, reason, pos in iter_games(lines, game_filter, headers=src.headers, comments=src.comments,
                                           validate_moves=src.validate_moves):
            if doc is None:
                stats.skip(f"pgn: {reason}")
            else:
                kept += 1
            yield doc, pos
        if lines.long_lines:
            stats.skip("line too long", lines.long_lines)
        if lines.bad_utf8:
            stats.skip("invalid UTF-8 (replaced)", lines.bad_utf8)


READERS = {"text": _read_text, "jsonl": _read_jsonl, "parquet": _read_parquet, "webdataset": _read_webdataset,
           "pgn": _read_pgn}


@dataclass
class SourceInfo:
    """A source as the manifest pane lists it: where it stands on disk before any build."""

    name: str
    domain: str
    format: str
    path: str
    status: str  # "ok", "missing" (glob matches nothing), "remote" (a URL, not listed) or "built-in"
    files: int
    bytes: int

    def est_tokens(self, chars_per_token: float) -> int:
        """Rough token count from the bytes on disk (UTF-8 text is about one byte a character)."""
        return int(self.bytes / chars_per_token)


def describe_source(src: SourceConfig, base_dir: Path | None = None) -> SourceInfo:
    """Files and bytes a source's glob matches now; cheap (stat only), so a UI can call it often.
    A remote URL is not listed (that would go to the network): its status is "remote"."""
    if src.builtin is not None:
        return SourceInfo(src.name, src.domain, src.format, "", "built-in", 0, 0)
    if files.is_url(src.path) and not src.path.startswith("file://") and not (
            src.path.startswith("memory://") or (src.path.startswith("hf://") and files._hf_offline())):
        return SourceInfo(src.name, src.domain, src.format, src.path, "remote", 0, 0)
    try:
        paths = files.expand(src.path, base_dir)
    except DataError:
        paths = []
    total = sum(files.size(p) for p in paths)
    return SourceInfo(src.name, src.domain, src.format, src.path, "ok" if paths else "missing", len(paths), total)
