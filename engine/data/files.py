"""Where a source's bytes come from: local globs, fsspec URLs (file://, s3://, https://, hf://, memory://),
a local Hugging Face cache, and .gz/.bz2/.xz/.zst files decompressed as streams.

Nothing here reads a whole file: `open_stream` hands back a binary file object that decompresses
as it is read, and `skip_to` moves it forward (a real seek where the file allows one, else reading
and dropping). fsspec and zstandard are imported only when a source needs them.
"""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import io
import lzma
import os
import re
from pathlib import Path
from typing import IO, Iterator

from engine.errors import DataError

COMPRESSED = {".gz": "gzip", ".tgz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
MAGIC = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00", "zstd": b"\x28\xb5\x2f\xfd"}
ZSTD_MAX_WINDOW = 1 << 31  # dumps made with `zstd --long=31` (Lichess) need a 2 GiB window
BLOCK = 1 << 20
ZSTD_READ = 1 << 17  # compressed bytes fed at a time (text expands ~5-10x)
# Errors a damaged or truncated compressed stream raises while it is read.
STREAM_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError, ValueError)

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HF_RE = re.compile(r"^hf://datasets/([^/@]+)/([^/@]+)(?:@([^/]+))?/?(.*)$")


def is_url(path: str) -> bool:
    """True for an fsspec URL (`s3://...`, `hf://...`); `file://` counts, a plain path does not."""
    return bool(_URL_RE.match(path))


def compression(path: str) -> str | None:
    """gzip, bz2, xz or zstd by the file's suffix; None for an uncompressed file."""
    name = path.rsplit("/", 1)[-1].lower()
    return next((kind for suffix, kind in COMPRESSED.items() if name.endswith(suffix)), None)


def strip_compression(path: str) -> str:
    """The name without its compression suffix: `a.pgn.zst` -> `a.pgn`, `b.tgz` -> `b.tar`."""
    if compression(path) is None:
        return path
    return path[:-4] + ".tar" if path.lower().endswith(".tgz") else path[: path.rfind(".")]


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_cached_pattern(url: str) -> str | None:
    """`hf://datasets/ORG/NAME[@REV]/GLOB` as a glob in the local cache's snapshot, when that snapshot exists."""
    m = _HF_RE.match(url)
    if not m:
        return None
    org, name, rev, rest = m.groups()
    repo = hf_cache_dir() / f"datasets--{org}--{name}"
    rev = rev or "main"
    ref = repo / "refs" / rev
    with contextlib.suppress(OSError):
        rev = ref.read_text(encoding="utf-8").strip() or rev
    snap = repo / "snapshots" / rev
    if not snap.is_dir():
        return None
    return str(snap / rest) if rest else str(snap / "**")


def expand(pattern: str, base_dir: Path | None = None) -> list[str]:
    """Files a source's `path` names, sorted: a local glob (relative to base_dir, ~ expanded, ** recursive)
    or an fsspec URL glob. With HF_HUB_OFFLINE set, an hf:// URL is looked up in the local cache.
    Raises DataError for a URL whose filesystem cannot be used (unknown protocol, missing package)."""
    if is_url(pattern) and not pattern.startswith("file://"):
        if pattern.startswith("hf://") and _hf_offline():
            local = hf_cached_pattern(pattern)
            if local is None:
                raise DataError(f"{pattern}: HF_HUB_OFFLINE is set and the dataset is not in {hf_cache_dir()}")
            return _local_glob(local, None)
        fs, root = _fs(pattern)
        try:
            if glob.has_magic(root):  # one listing with the entries' types, not a request per file
                found = [p for p, info in fs.glob(root, detail=True).items() if info.get("type") != "directory"]
            else:
                found = [root] if fs.isfile(root) else []
        except FileNotFoundError:
            return []
        except Exception as exc:  # a remote filesystem's own errors (auth, network) as one line
            raise DataError(f"{pattern}: cannot list files ({type(exc).__name__}: {exc})") from None
        return sorted(fs.unstrip_protocol(p) for p in found)
    return _local_glob(pattern.removeprefix("file://"), base_dir)


def _local_glob(pattern: str, base_dir: Path | None) -> list[str]:
    pattern = os.path.expanduser(pattern)
    if base_dir is not None and not os.path.isabs(pattern):
        pattern = str(base_dir / pattern)
    return [p for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]


def _fs(url: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is a dependency
        raise DataError(f"{url}: reading URLs needs the fsspec package") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise DataError(f"{url}: no filesystem for this URL ({exc})") from None


def size(path: str) -> int:
    """Bytes on disk (compressed size for a compressed file); 0 when unknown."""
    try:
        if is_url(path) and not path.startswith("file://"):
            fs, root = _fs(path)
            return int(fs.size(root) or 0)
        return os.path.getsize(path.removeprefix("file://"))
    except Exception:
        return 0


def open_raw(path: str) -> IO[bytes]:
    """The file's bytes as stored (no decompression), seekable where the filesystem allows."""
    if is_url(path) and not path.startswith("file://"):
        fs, root = _fs(path)
        return fs.open(root, "rb")
    return open(path.removeprefix("file://"), "rb")


@contextlib.contextmanager
def open_stream(path: str) -> Iterator[IO[bytes]]:
    """A binary stream of the file's content, decompressed by its suffix (.gz .bz2 .xz .zst). A stream whose
    first bytes are not of the kind its suffix says raises DataError naming the file."""
    kind = compression(path)
    raw = open_raw(path)
    try:
        if kind is None:
            yield raw
            return
        head = raw.read(len(MAGIC[kind]))
        raw.seek(0)
        if head != MAGIC[kind]:
            raise DataError(f"{path}: not a {kind} stream (its suffix says {kind}; first bytes {head[:6]!r})")
        if kind == "gzip":
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")
        elif kind == "bz2":
            stream = bz2.BZ2File(raw, mode="rb")
        elif kind == "xz":
            stream = lzma.LZMAFile(raw, mode="rb")
        else:
            stream = io.BufferedReader(ZstdReader(raw), buffer_size=BLOCK)
        with stream:
            yield stream
    finally:
        raw.close()


class ZstdReader(io.RawIOBase):
    """Streaming zstd decompression of a file object: concatenated frames are read in turn, and a
    stream cut inside a frame raises EOFError (zstandard's own reader ends quietly there)."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._error = zstandard.ZstdError
        self._obj = self._dctx.decompressobj()
        self._buf = memoryview(b"")
        self._pos = 0
        self._eof = False
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buf and not self._eof:
            data = self._raw.read(ZSTD_READ)
            if not data:
                self._eof = True
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame (truncated file)")
                return
            parts = []
            while data:
                try:
                    parts.append(self._obj.decompress(data))
                except self._error as exc:
                    raise ValueError(f"damaged zstd data ({exc})") from None
                self._in_frame = True
                if self._obj.eof:
                    data = self._obj.unused_data
                    self._obj = self._dctx.decompressobj()
                    self._in_frame = False
                else:
                    data = b""
            self._buf = memoryview(b"".join(parts))

    def readinto(self, b) -> int:
        if not self._buf:
            self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos


def why(exc: BaseException) -> str:
    """A read error in a few words: its strerror, else its message, else its type."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def skip_to(fh: IO[bytes], pos: int) -> int:
    """Move a fresh stream forward to byte `pos` of its content; returns where it stands (less at EOF)."""
    if pos <= 0:
        return 0
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        if fh.seekable():  # plain files, and gzip/bz2/xz (which read forward to get there)
            fh.seek(pos)
            return pos
    done = 0
    while done < pos:
        data = fh.read(min(BLOCK, pos - done))
        if not data:
            break
        done += len(data)
    return done
