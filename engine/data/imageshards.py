"""Image shards and pair files: images decoded and resized once, memory-mapped for training, so the
training loop never decodes a JPEG.

`<prefix>.img` holds `count` images of `size` x `size` x 3 uint8 (RGB, row-major, back to back);
`<prefix>.pairs` holds one record per image-text pair: the pair's image index (u32) and the UTF-8
length in bytes of its caption (u32, for bits per byte). A pair's caption tokens are document k of
the token shard `<prefix>.cap` (engine.data.shards), written later with the profile's tokenizer.
Both files start with a 128-byte header (little-endian):

    0   8s   magic     b"FCIMAGES" (.img) or b"FCIMPAIR" (.pairs)
    8   u16  version   FORMAT_VERSION
    10  u16  channels  3 (.img); 0 (.pairs)
    12  u32  size      image side in pixels (.pairs repeats the .img's)
    16  u64  count     images (.img) or pairs (.pairs)
    24  8s   pair id   random, the same in an .img and the .pairs written with it
    32  32s  checksum  SHA-256 of the file's bytes after the header
    64  u64  images    (.pairs only) the image count of its .img; 0 in an .img
    72  56x  zero padding

The writer streams to temp files beside the targets and renames them into place only when closed
(.img first, then .pairs), so a crash leaves the previous files or none, never half of one.
Opening checks magic, version, sizes, the pair id and every pair's image index, and refuses with one
line naming the file; `verify_images` (`fcwork data verify`) reads every byte against the checksums.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np

from engine.atomic import fsync_dir
from engine.errors import ShardError

IMG_MAGIC = b"FCIMAGES"
PAIR_MAGIC = b"FCIMPAIR"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHHIQ8s32sQ")
HEADER_SIZE = 128
CHANNELS = 3
PAIR_DTYPE = np.dtype([("image", "<u4"), ("nbytes", "<u4")])
assert HEADER.size <= HEADER_SIZE and PAIR_DTYPE.itemsize == 8


def image_paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """(`<prefix>.img`, `<prefix>.pairs`)."""
    prefix = Path(prefix)
    return prefix.with_name(prefix.name + ".img"), prefix.with_name(prefix.name + ".pairs")


class ImageShardWriter:
    """Streams images and pairs into temp files; `close()` renames them into place, `abort()` drops them.

    Use as a context manager: an exception inside the block aborts, so nothing half-written remains.
    """

    def __init__(self, prefix: str | os.PathLike, size: int) -> None:
        self.img_path, self.pairs_path = image_paths(prefix)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 65535:
            raise ShardError(f"{self.img_path}: image size {size!r}: expected an integer in 1..65535")
        self.size = size
        self.n_images = 0
        self._pairs: list[tuple[int, int]] = []
        self._pair_id = os.urandom(8)
        self._sum = hashlib.sha256()
        self._closed = False
        self.img_path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.img_path.name}.", suffix=".tmp", dir=self.img_path.parent)
        self._fh: IO[bytes] = os.fdopen(fd, "wb")
        self._fh.write(b"\0" * HEADER_SIZE)

    def add_image(self, pixels: np.ndarray) -> int:
        """Append one image (uint8, size x size x 3); returns its index."""
        arr = np.asarray(pixels)
        if arr.dtype != np.uint8 or arr.shape != (self.size, self.size, CHANNELS):
            raise ShardError(f"{self.img_path}: image {self.n_images}: expected uint8 {self.size}x{self.size}x3, "
                             f"got {arr.dtype} {'x'.join(map(str, arr.shape))}")
        data = np.ascontiguousarray(arr).tobytes()
        self._fh.write(data)
        self._sum.update(data)
        self.n_images += 1
        return self.n_images - 1

    def add_pair(self, image: int, caption_bytes: int) -> int:
        """Record a pair of image `image` (already added) and a caption of `caption_bytes` UTF-8 bytes."""
        if not 0 <= image < self.n_images:
            raise ShardError(f"{self.pairs_path}: pair {len(self._pairs)}: image {image} not written yet")
        self._pairs.append((image, min(int(caption_bytes), 0xFFFFFFFF)))
        return len(self._pairs) - 1

    def close(self) -> None:
        """Write both headers, sync, and rename the files into place (.img first, then .pairs)."""
        if self._closed:
            raise ShardError(f"{self.img_path}: image writer is already closed")
        self._closed = True
        try:
            self._fh.seek(0)
            self._fh.write(HEADER.pack(IMG_MAGIC, FORMAT_VERSION, CHANNELS, self.size, self.n_images,
                                       self._pair_id, self._sum.digest(), 0))
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            pairs = np.array(self._pairs, dtype=PAIR_DTYPE) if self._pairs else np.zeros(0, PAIR_DTYPE)
            body = pairs.tobytes()
            head = HEADER.pack(PAIR_MAGIC, FORMAT_VERSION, 0, self.size, len(self._pairs), self._pair_id,
                               hashlib.sha256(body).digest(), self.n_images)
            fd, pairs_tmp = tempfile.mkstemp(prefix=f".{self.pairs_path.name}.", suffix=".tmp",
                                             dir=self.pairs_path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(head.ljust(HEADER_SIZE, b"\0") + body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(self._tmp, self.img_path)
            os.replace(pairs_tmp, self.pairs_path)
            fsync_dir(self.img_path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                self._fh.close()
            for tmp in (self._tmp, locals().get("pairs_tmp")):
                if tmp:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
            raise

    def abort(self) -> None:
        """Drop the temp files; the targets stay as they were."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> "ImageShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class Header:
    """A parsed header of an .img or .pairs file."""

    magic: bytes
    version: int
    channels: int
    size: int
    count: int
    pair_id: bytes
    checksum: bytes
    images: int


def parse_header(data: bytes, path: Path | str, magic: bytes) -> Header:
    """Check and unpack a header; ShardError (one line naming `path`) for anything that does not add up."""
    if len(data) < HEADER_SIZE:
        raise ShardError(f"{path}: truncated header ({len(data)} of {HEADER_SIZE} bytes)")
    h = Header(*HEADER.unpack_from(data))
    if h.magic != magic:
        raise ShardError(f"{path}: not an image shard file (magic {h.magic!r}, expected {magic!r})")
    if h.version != FORMAT_VERSION:
        raise ShardError(f"{path}: image shard format version {h.version}, expected {FORMAT_VERSION} "
                         "(rebuild with `fcwork data prepare`)")
    want_channels = CHANNELS if magic == IMG_MAGIC else 0
    if h.channels != want_channels or h.size < 1:
        raise ShardError(f"{path}: bad header (channels {h.channels}, size {h.size})")
    if magic == IMG_MAGIC and h.images:
        raise ShardError(f"{path}: bad header (image count field {h.images} set in an .img)")
    return h


@dataclass
class ImageShard:
    """An open image shard and its pairs: `images` memory-mapped uint8 [n_images, size, size, 3];
    `pairs` uint32 [n_pairs, 2] (image index, caption bytes)."""

    path: Path  # the prefix
    size: int
    images: np.ndarray
    pairs: np.ndarray
    n_images: int
    n_pairs: int

    def image(self, k: int) -> np.ndarray:
        """Image k as a read-only uint8 [size, size, 3] view."""
        if not 0 <= k < self.n_images:
            raise IndexError(f"{self.path}.img: image {k} out of range (0..{self.n_images - 1})")
        return self.images[k]

    def pair_image(self, p: int) -> int:
        """The image index of pair p."""
        return int(self.pairs[p, 0])


def _read_head(path: Path, magic: bytes) -> tuple[Header, int]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(HEADER_SIZE)
            file_size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise ShardError(f"{path}: missing (run `fcwork data prepare`)") from None
    except OSError as exc:
        raise ShardError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_header(data, path, magic), file_size


def open_images(prefix: str | os.PathLike, expected_size: int | None = None) -> ImageShard:
    """Open `<prefix>.img` and `<prefix>.pairs` (memory-mapped), checking headers, lengths and pair indices."""
    img_path, pairs_path = image_paths(prefix)
    ih, img_bytes = _read_head(img_path, IMG_MAGIC)
    ph, pairs_bytes = _read_head(pairs_path, PAIR_MAGIC)
    if ph.pair_id != ih.pair_id:
        raise ShardError(f"{pairs_path}: written with another {img_path.name} (pair ids differ): rebuild the images")
    if ph.size != ih.size or ph.images != ih.count:
        raise ShardError(f"{pairs_path}: says {ph.images} images of {ph.size} px, {img_path.name} holds "
                         f"{ih.count} of {ih.size} px")
    if expected_size is not None and ih.size != expected_size:
        raise ShardError(f"{img_path}: images of {ih.size} px, expected {expected_size} px (the stage's image size)")
    per = ih.size * ih.size * CHANNELS
    want = HEADER_SIZE + ih.count * per
    if img_bytes != want:
        raise ShardError(f"{img_path}: {img_bytes:,} bytes, expected {want:,} for {ih.count} images of {ih.size} px "
                         "(truncated or damaged)")
    want = HEADER_SIZE + ph.count * PAIR_DTYPE.itemsize
    if pairs_bytes != want:
        raise ShardError(f"{pairs_path}: {pairs_bytes:,} bytes, expected {want:,} for {ph.count} pairs")
    if ih.count:
        images = np.memmap(img_path, dtype=np.uint8, mode="r", offset=HEADER_SIZE,
                           shape=(ih.count, ih.size, ih.size, CHANNELS))
    else:
        images = np.zeros((0, ih.size, ih.size, CHANNELS), np.uint8)
    pairs = np.fromfile(pairs_path, dtype="<u4", offset=HEADER_SIZE).reshape(-1, 2)
    if pairs.size and int(pairs[:, 0].max()) >= ih.count:
        bad = int(np.argmax(pairs[:, 0] >= ih.count))
        raise ShardError(f"{pairs_path}: pair {bad} names image {int(pairs[bad, 0])}, but {img_path.name} holds {ih.count}")
    return ImageShard(Path(prefix), ih.size, images, pairs, ih.count, ph.count)


def verify_images(prefix: str | os.PathLike, on_read: Callable[[int], None] | None = None) -> ImageShard:
    """Open the shard and read every byte of both files against their SHA-256; ShardError on a mismatch."""
    shard = open_images(prefix)
    for path, magic in zip(image_paths(prefix), (IMG_MAGIC, PAIR_MAGIC)):
        total = hashlib.sha256()
        with open(path, "rb") as fh:
            head = parse_header(fh.read(HEADER_SIZE), path, magic)
            while chunk := fh.read(1 << 20):
                total.update(chunk)
                if on_read:
                    on_read(len(chunk))
        if total.digest() != head.checksum:
            raise ShardError(f"{path}: checksum mismatch (the bytes changed after it was written): rebuild the images")
    return shard
