"""Token shards: `<domain>.bin` (token ids, documents back to back, EOS after each) and `<domain>.idx`
(uint64 document start offsets plus the total), each behind a fixed header (128 bytes; 64 in
version 1, which is still read).

Header layout (little-endian, both files):

    0   8s   magic          b"FCTOKBIN" (.bin) or b"FCTOKIDX" (.idx)
    8   u16  version        FORMAT_VERSION
    10  u16  dtype code     bytes per token id: 2 (uint16) or 4 (uint32); .idx repeats the .bin's
    12  u32  vocab size
    16  u64  count          tokens (.bin) or documents (.idx; it then holds count + 1 offsets)
    24  8s   pair id        random, the same in a .bin and the .idx written with it
    32  32s  tokenizer hash raw SHA-256 of the tokenizer's .model file
    -- version 2 on --
    64  u32  max id         the largest token id in the .bin (the .idx repeats it)
    68  u32  reserved       0
    72  32s  checksum       SHA-256 of the file's bytes after the header
    104 24x  zero padding

Opening a shard checks the max id against the vocabulary and scans a sample of the tokens, so an
id the model cannot embed is one line naming the file before training starts, not an index error
in the middle of it; `verify_shard` (`fcwork data verify`) reads every byte against the checksum.

The writer streams to temp files beside the targets and renames them into place only when done,
so a crash leaves the previous shard (or nothing), never half of one. The reader memory-maps the
tokens and refuses, with one line naming the file, anything that does not add up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Sequence

import numpy as np

from engine.atomic import fsync_dir
from engine.errors import ShardError, differing_prefixes

BIN_MAGIC = b"FCTOKBIN"
IDX_MAGIC = b"FCTOKIDX"
FORMAT_VERSION = 2
HEADER = struct.Struct("<8sHHIQ8s32s")  # every version
EXTRA = struct.Struct("<II32s")  # version 2 on: max id, reserved, checksum
V1_HEADER_SIZE = 64
HEADER_SIZE = 128
assert HEADER.size == V1_HEADER_SIZE and V1_HEADER_SIZE + EXTRA.size <= HEADER_SIZE
SAMPLE_WINDOWS, SAMPLE_TOKENS = 16, 1 << 15  # what opening a shard scans for out-of-vocabulary ids
UINT16_MAX_VOCAB = 65536  # ids 0..65535 fit uint16
FLUSH_TOKENS = 1 << 20  # tokens buffered before a write


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id of the vocabulary fits, else uint32 (little-endian on disk)."""
    return np.dtype("<u2") if vocab_size <= UINT16_MAX_VOCAB else np.dtype("<u4")


@dataclass(frozen=True)
class ShardInfo:
    """What `write_shard` wrote: paths, sizes and the identity of the tokenizer."""

    path: Path  # the prefix: <path>.bin and <path>.idx
    n_tokens: int  # EOS included
    n_docs: int
    vocab_size: int
    tokenizer_hash: str
    dtype: str

    @property
    def bin_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bin")

    @property
    def idx_path(self) -> Path:
        return self.path.with_name(self.path.name + ".idx")


@dataclass
class Shard:
    """An open shard: `tokens` memory-mapped (read-only), `doc_starts` with n_docs + 1 offsets."""

    path: Path
    tokens: np.ndarray  # np.memmap of uint16/uint32 (a plain empty array when the shard is empty)
    doc_starts: np.ndarray  # uint64, doc_starts[-1] == n_tokens
    n_tokens: int
    n_docs: int
    vocab_size: int
    tokenizer_hash: str

    def doc(self, k: int) -> np.ndarray:
        """The ids of document k without its trailing EOS."""
        if not 0 <= k < self.n_docs:
            raise IndexError(f"{self.path}: document {k} out of range (0..{self.n_docs - 1})")
        return self.tokens[int(self.doc_starts[k]) : int(self.doc_starts[k + 1]) - 1]


def _paths(prefix: str | os.PathLike) -> tuple[Path, Path, Path]:
    prefix = Path(prefix)
    return prefix, prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")


def _hash_bytes(tokenizer_hash: str, where: Path) -> bytes:
    try:
        raw = bytes.fromhex(tokenizer_hash)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ShardError(f"{where}: tokenizer hash {tokenizer_hash!r}: expected 64 hex digits (a SHA-256)")
    return raw


class ShardWriter:
    """Streams documents into temp .bin/.idx files; `close()` renames them into place, `abort()` drops them.

    Use as a context manager: an exception inside the block aborts, so nothing half-written remains.
    """

    def __init__(self, prefix: str | os.PathLike, vocab_size: int, tokenizer_hash: str, eos_id: int,
                 append: bool = False) -> None:
        """`append`: start from the shard already at `prefix` (same tokenizer and vocabulary, else ShardError):
        its tokens and offsets are copied into the temp files, so the old shard stays whole until close()."""
        self.prefix, self.bin_path, self.idx_path = _paths(prefix)
        if not isinstance(vocab_size, int) or not 0 < vocab_size <= 1 << 32:
            raise ShardError(f"{self.bin_path}: vocab_size {vocab_size!r}: expected an integer in 1..{1 << 32}")
        if not isinstance(eos_id, int) or not 0 <= eos_id < vocab_size:
            raise ShardError(f"{self.bin_path}: eos_id {eos_id!r}: expected an id in 0..{vocab_size - 1}")
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.hash_hex = tokenizer_hash.lower()
        self._hash = _hash_bytes(tokenizer_hash, self.bin_path)
        self.dtype = token_dtype(vocab_size)
        self._pair = os.urandom(8)
        self.n_tokens = 0
        self.n_docs = 0
        self._bufs: list[np.ndarray] = []
        self._buffered = 0
        self._offsets: list[np.ndarray] = [np.zeros(1, "<u8")]
        self._closed = False
        self.max_id = 0
        self._sums = [hashlib.sha256(), hashlib.sha256()]  # of the .bin's and the .idx's payload
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._files: list[tuple[IO[bytes], str]] = []
        try:
            for target in (self.bin_path, self.idx_path):
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                fh = os.fdopen(fd, "wb")
                fh.write(b"\0" * HEADER_SIZE)  # filled in by close()
                self._files.append((fh, tmp))
            if append:
                self._copy_existing()
        except BaseException:
            self.abort()
            raise

    def _copy_existing(self) -> None:
        old = open_shard(self.prefix, expected_hash=self.hash_hex, expected_vocab=self.vocab_size)
        (bin_fh, _), (idx_fh, _) = self._files
        for src, out, total in ((self.bin_path, bin_fh, self._sums[0]), (self.idx_path, idx_fh, self._sums[1])):
            with open(src, "rb") as fh:
                fh.seek(_header_size(src))
                while chunk := fh.read(1 << 20):
                    out.write(chunk)
                    total.update(chunk)
        if old.n_tokens:
            self.max_id = int(np.asarray(old.tokens).max())
        self.n_tokens, self.n_docs = old.n_tokens, old.n_docs
        self._offsets = []  # the copied offsets already end with the total, where new documents start

    def add(self, ids: Sequence[int] | np.ndarray) -> None:
        """Append one document; EOS is added after it."""
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ShardError(f"{self.bin_path}: document {self.n_docs}: expected a flat sequence of ids, got shape {arr.shape}")
        self._check_ids(arr, f"document {self.n_docs}: ")
        doc = np.empty(arr.size + 1, self.dtype)
        doc[:-1] = arr
        doc[-1] = self.eos_id
        self._push(doc, np.array([doc.size], np.uint64))

    def add_encoded(self, tokens: np.ndarray, doc_lengths: np.ndarray) -> None:
        """Append many documents at once: `tokens` already holds EOS after each, `doc_lengths` counts it.

        For the pretokenizer, whose workers hand back whole chunks; ids are range-checked here.
        """
        tokens = np.asarray(tokens)
        lengths = np.asarray(doc_lengths, dtype=np.uint64)
        if int(lengths.sum()) != tokens.size:
            raise ShardError(f"{self.bin_path}: block of {tokens.size} tokens but document lengths sum to {int(lengths.sum())}")
        self._check_ids(tokens, "")
        self._push(tokens.astype(self.dtype, copy=False), lengths)

    def _check_ids(self, ids: np.ndarray, where: str) -> None:
        """Integer ids inside the vocabulary, else a ShardError naming the file and `where` (a document)."""
        if ids.size and ids.dtype.kind not in "iu":
            raise ShardError(f"{self.bin_path}: {where}expected integer token ids, got {ids.dtype}")
        lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
        if lo < 0 or hi >= self.vocab_size:
            raise ShardError(f"{self.bin_path}: {where}token id {lo if lo < 0 else hi} outside the vocabulary "
                             f"0..{self.vocab_size - 1}")

    def _push(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        if self._closed:
            raise ShardError(f"{self.bin_path}: shard writer is already closed")
        if lengths.size:
            ends = np.cumsum(lengths, dtype="<u8")
            ends += np.uint64(self.n_tokens)
            self._offsets.append(ends)
        self.n_tokens += tokens.size
        self.n_docs += lengths.size
        if tokens.size:
            self.max_id = max(self.max_id, int(tokens.max()))
        self._bufs.append(tokens)
        self._buffered += tokens.size
        if self._buffered >= FLUSH_TOKENS:
            self._flush()

    def _flush(self) -> None:
        for (fh, _), total, parts in zip(self._files, self._sums, (self._bufs, self._offsets)):
            if parts:
                data = np.concatenate(parts).tobytes()
                fh.write(data)
                total.update(data)
        self._bufs, self._buffered, self._offsets = [], 0, []

    def close(self) -> ShardInfo:
        """Write the headers, sync, and rename both files into place (.bin first, then .idx)."""
        if self._closed:
            raise ShardError(f"{self.bin_path}: shard writer is already closed")
        try:
            self._flush()
            (bin_fh, bin_tmp), (idx_fh, idx_tmp) = self._files
            code = self.dtype.itemsize
            for (fh, _), magic, count, total in zip(self._files, (BIN_MAGIC, IDX_MAGIC), (self.n_tokens, self.n_docs),
                                                     self._sums):
                fh.seek(0)
                fh.write(HEADER.pack(magic, FORMAT_VERSION, code, self.vocab_size, count, self._pair, self._hash)
                         + EXTRA.pack(self.max_id, 0, total.digest()))
            for fh, _ in self._files:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            os.replace(bin_tmp, self.bin_path)
            os.replace(idx_tmp, self.idx_path)
            self._files = []
            fsync_dir(self.prefix.parent)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return ShardInfo(self.prefix, self.n_tokens, self.n_docs, self.vocab_size, self.hash_hex, self.dtype.name)

    def abort(self) -> None:
        """Close and delete the temp files; the targets are left as they were."""
        self._closed = True
        for fh, tmp in self._files:
            with contextlib.suppress(OSError):
                fh.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._files = []

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def write_shard(
    prefix: str | os.PathLike,
    docs: Iterable[Sequence[int] | np.ndarray],
    vocab_size: int,
    tokenizer_hash: str,
    eos_id: int,
) -> ShardInfo:
    """Write `<prefix>.bin` and `<prefix>.idx` from documents of token ids, EOS after each; streams, atomic."""
    with ShardWriter(prefix, vocab_size, tokenizer_hash, eos_id) as writer:
        for doc in docs:
            writer.add(doc)
        return writer.close()


# -- reading ------------------------------------------------------------------------------

def _rerun_hint(prefix: Path) -> str:
    """`fcwork data pretokenize <profile>` when the shard sits in a workspace's data/<profile>/tok/."""
    parts = prefix.parent.parts
    profile = "PROFILE"
    if parts and parts[-1] == "heldout":
        parts = parts[:-1]
    if len(parts) >= 2 and parts[-1] == "tok":
        profile = parts[-2]
    return f"rerun `fcwork data pretokenize {profile}`"


@dataclass(frozen=True)
class Header:
    """A shard file's header, checked: magic, a version this code reads, a known dtype."""

    version: int
    code: int  # bytes per token id
    vocab: int
    count: int
    pair: bytes
    digest: bytes  # the tokenizer's SHA-256
    size: int  # of the whole file
    header_size: int
    max_id: int | None  # version 2 on
    checksum: bytes | None  # version 2 on: SHA-256 of the bytes after the header


def _header_size(path: Path) -> int:
    """Where a shard file's payload starts (its version decides)."""
    with open(path, "rb") as fh:
        head = fh.read(V1_HEADER_SIZE)
    return V1_HEADER_SIZE if len(head) == V1_HEADER_SIZE and HEADER.unpack(head)[1] == 1 else HEADER_SIZE


def _read_header(path: Path, magic: bytes, what: str) -> Header:
    """The header of a .bin or .idx after checking magic, version, length and dtype."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_SIZE)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise ShardError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise ShardError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if head[:8] != magic:
        if len(head) < 8 or head[:5] != magic[:5]:
            raise ShardError(f"{path}: not a FusterCluck shard (bad magic {head[:8]!r}, expected {magic!r})")
        raise ShardError(f"{path}: not a FusterCluck {what} (magic {head[:8]!r}, expected {magic!r})")
    if len(head) < V1_HEADER_SIZE:
        raise ShardError(f"{path}: truncated: {len(head)} bytes, shorter than the {V1_HEADER_SIZE}-byte header")
    _, version, code, vocab, count, pair, digest = HEADER.unpack(head[:V1_HEADER_SIZE])
    if version not in (1, FORMAT_VERSION):
        raise ShardError(
            f"{path}: shard format version {version} is not supported (this fcwork reads versions 1 and {FORMAT_VERSION}): "
            f"{_rerun_hint(path.with_suffix(''))}"
        )
    max_id = checksum = None
    header_size = V1_HEADER_SIZE
    if version >= 2:
        header_size = HEADER_SIZE
        if len(head) < HEADER_SIZE:
            raise ShardError(f"{path}: truncated: {len(head)} bytes, shorter than the {HEADER_SIZE}-byte header")
        max_id, _, checksum = EXTRA.unpack(head[V1_HEADER_SIZE:V1_HEADER_SIZE + EXTRA.size])
    if code not in (2, 4):
        raise ShardError(f"{path}: dtype code {code}: expected 2 (uint16) or 4 (uint32)")
    return Header(version, code, vocab, count, pair, digest, size, header_size, max_id, checksum)


def shard_counts(prefix: str | os.PathLike) -> tuple[int, int]:
    """(tokens, documents) from the headers of `<prefix>.bin` and `.idx`, without mapping the shard."""
    _, bin_path, idx_path = _paths(prefix)
    return _read_header(bin_path, BIN_MAGIC, "shard").count, _read_header(idx_path, IDX_MAGIC, "shard index").count


def open_shard(
    prefix: str | os.PathLike,
    expected_hash: str | None = None,
    expected_vocab: int | None = None,
) -> Shard:
    """Memory-map `<prefix>.bin` with its `.idx`; refuse a wrong magic/version, a truncated file,
    a .bin/.idx pair that disagree, or a tokenizer/vocabulary other than the expected one."""
    prefix, bin_path, idx_path = _paths(prefix)
    head = _read_header(bin_path, BIN_MAGIC, "shard")
    code, vocab, n_tokens, pair, digest, size = head.code, head.vocab, head.count, head.pair, head.digest, head.size
    want = head.header_size + n_tokens * code
    if size != want:
        kind = "truncated" if size < want else "has trailing bytes"
        raise ShardError(f"{bin_path}: {kind}: header says {n_tokens:,} tokens ({want:,} bytes), file has {size:,} bytes")
    dtype = np.dtype("<u2" if code == 2 else "<u4")
    if dtype != token_dtype(vocab):
        raise ShardError(f"{bin_path}: dtype {dtype.name} does not fit vocabulary size {vocab:,} (expected {token_dtype(vocab).name})")
    hash_hex = digest.hex()
    if expected_hash is not None and hash_hex != expected_hash.lower():
        made, want = differing_prefixes(hash_hex, expected_hash.lower(), least=8)
        raise ShardError(f"{bin_path}: made with tokenizer {made}…, expected {want}…: {_rerun_hint(prefix)}")
    if expected_vocab is not None and vocab != expected_vocab:
        raise ShardError(f"{bin_path}: made for a vocabulary of {vocab:,}, expected {expected_vocab:,}: {_rerun_hint(prefix)}")

    if not idx_path.exists():
        raise ShardError(f"{idx_path}: missing index of shard {bin_path.name}: {_rerun_hint(prefix)}")
    ihead = _read_header(idx_path, IDX_MAGIC, "shard index")
    icode, ivocab, n_docs, ipair, idigest, isize = ihead.code, ihead.vocab, ihead.count, ihead.pair, ihead.digest, ihead.size
    iwant = ihead.header_size + (n_docs + 1) * 8
    if isize != iwant:
        kind = "truncated" if isize < iwant else "has trailing bytes"
        raise ShardError(f"{idx_path}: {kind}: header says {n_docs:,} documents ({iwant:,} bytes), file has {isize:,} bytes")
    if (ipair, idigest, ivocab, icode) != (pair, digest, vocab, code):
        raise ShardError(f"{idx_path}: does not belong to {bin_path.name} (written separately): {_rerun_hint(prefix)}")
    doc_starts = np.fromfile(idx_path, dtype="<u8", offset=ihead.header_size, count=n_docs + 1)
    if doc_starts[0] != 0 or int(doc_starts[-1]) != n_tokens or (n_docs and np.any(np.diff(doc_starts.astype(np.int64)) < 1)):
        raise ShardError(
            f"{idx_path}: document offsets disagree with {bin_path.name} "
            f"(expected 0 .. {n_tokens:,}, increasing; got {int(doc_starts[0]):,} .. {int(doc_starts[-1]):,})"
        )
    if head.max_id is not None and n_tokens and head.max_id >= vocab:
        raise ShardError(f"{bin_path}: holds token id {head.max_id:,}, outside the vocabulary 0..{vocab - 1:,}: "
                         f"{_rerun_hint(prefix)}")
    if n_tokens:
        tokens = np.memmap(bin_path, dtype=dtype, mode="r", offset=head.header_size, shape=(n_tokens,))
        _scan_sample(tokens, vocab, bin_path, prefix)
    else:
        tokens = np.zeros(0, dtype)
    return Shard(prefix, tokens, doc_starts.astype(np.uint64, copy=False), n_tokens, n_docs, vocab, hash_hex)


def _scan_sample(tokens: np.ndarray, vocab: int, bin_path: Path, prefix: Path) -> None:
    """Look at SAMPLE_WINDOWS evenly spaced stretches for ids beyond the vocabulary (damage after
    writing, or a version-1 shard, which has no max id)."""
    n = tokens.size
    width = min(SAMPLE_TOKENS, n)
    for start in np.linspace(0, n - width, num=min(SAMPLE_WINDOWS, max(n // width, 1))).astype(np.int64):
        part = np.asarray(tokens[start:start + width])
        hi = int(part.max())
        if hi >= vocab:
            at = int(start) + int(np.argmax(part >= vocab))
            raise ShardError(f"{bin_path}: token id {hi:,} at position {at:,} is outside the vocabulary 0..{vocab - 1:,} "
                             f"(a damaged shard): {_rerun_hint(prefix)}")


@dataclass
class ShardCheck:
    """What `verify_shard` found: counts, and one line per problem (none: the shard is sound)."""

    path: Path
    n_tokens: int = 0
    n_docs: int = 0
    version: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shard(prefix: str | os.PathLike, expected_hash: str | None = None, expected_vocab: int | None = None,
                 progress: Callable[[int], None] | None = None) -> ShardCheck:
    """Every byte of a shard against its header: what `open_shard` checks, then the checksum and the
    largest id over the whole .bin and .idx (version 1 shards have neither: a note says so)."""
    prefix, bin_path, idx_path = _paths(prefix)
    check = ShardCheck(prefix)
    try:
        shard = open_shard(prefix, expected_hash=expected_hash, expected_vocab=expected_vocab)
    except ShardError as exc:
        check.problems.append(str(exc))
        return check
    check.n_tokens, check.n_docs = shard.n_tokens, shard.n_docs
    for path, magic, what in ((bin_path, BIN_MAGIC, "shard"), (idx_path, IDX_MAGIC, "shard index")):
        head = _read_header(path, magic, what)
        check.version = head.version
        total, top = hashlib.sha256(), 0
        with open(path, "rb") as fh:
            fh.seek(head.header_size)
            while chunk := fh.read(1 << 22):
                total.update(chunk)
                if magic == BIN_MAGIC:
                    top = max(top, int(np.frombuffer(chunk, dtype="<u2" if head.code == 2 else "<u4").max()))
                if progress is not None:
                    progress(len(chunk))
        if head.checksum is None:
            check.notes.append(f"{path}: format version 1 has no checksum: {_rerun_hint(prefix)} to add one")
        elif total.digest() != head.checksum:
            check.problems.append(f"{path}: checksum mismatch: the file changed after it was written: {_rerun_hint(prefix)}")
        if magic == BIN_MAGIC and shard.n_tokens:
            if top >= shard.vocab_size:
                check.problems.append(f"{path}: holds token id {top:,}, outside the vocabulary 0..{shard.vocab_size - 1:,}: "
                                      f"{_rerun_hint(prefix)}")
            elif head.max_id is not None and top != head.max_id:
                check.problems.append(f"{path}: largest token id is {top:,}, the header says {head.max_id:,}: "
                                      f"{_rerun_hint(prefix)}")
    return check
