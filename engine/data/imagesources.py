"""Image-text sources: read (image, caption) samples out of WebDataset tars, Parquet files in the
Hugging Face datasets layout, or the built-in generators, and decode each image once with Pillow.

- WebDataset: members grouped by key (the path up to the first dot of the file name, consecutive in
  the tar, as LAION/CC dumps are written); the image is the first member whose suffix the source's
  `image` names (`"auto"`: jpg, jpeg, png, webp); the caption is the member whose suffix is `field`
  (`"text"`: txt or text), else `field` (dotted) of the sample's `json` member. Read with the
  streaming tar reader of engine.data.sources (`tar_members`), not the `webdataset` package: it
  already handles local and fsspec paths, compression and truncated tars, and counts what it skips.
- Parquet: the `image` column holds a struct of `bytes` and `path` (HF `datasets.Image`) or plain
  binary; `field` names the caption column (dotted for nested fields). One row group at a time.

Bad data never stops a build: a corrupt, truncated, non-image or too-large image (a decompression
bomb: more than `data.max_image_pixels` pixels, or what Pillow itself flags), or a sample without
image or caption, is counted by reason in `SourceStats.skipped`.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engine.data import files
from engine.data.records import RecordFormat, RecordSkip
from engine.data.sources import SourceStats, matched_paths, member_suffix, open_parquet, tar_members
from engine.errors import DataError
from engine.profile import SourceConfig

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
MAX_MEMBER_BYTES = 64 << 20  # a tar member (image or caption) larger than this is skipped unread
MAX_CAPTION_CHARS = 4000
IMAGE_MAGICS = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
PAD_GREY = 128
BUILTIN_IMAGES = 600  # images a built-in image source gives without max_docs  # letterbox bars: mid grey, neutral for any image's statistics


@dataclass
class ImageSample:
    """One image and its captions (each caption makes a pair); `meta` keeps ground truth
    (a built-in's FEN or table) for probes. `image` is encoded bytes or a Pillow image."""

    key: str
    image: Any
    captions: list[str]
    meta: dict = field(default_factory=dict)


def image_suffixes(spec: str) -> tuple[str, ...]:
    """The member suffixes an `image` setting names: "auto" or a ";"/","-separated list."""
    if spec.strip().lower() == "auto":
        return IMAGE_SUFFIXES
    return tuple(s.strip().lower().lstrip(".") for s in spec.replace(",", ";").split(";") if s.strip())


def decode_image(data: Any, size: int, max_pixels: int) -> np.ndarray | str:
    """An image (encoded bytes or a Pillow image) as uint8 [size, size, 3], letterboxed: scaled so its
    longer side is `size` (aspect kept, nothing cropped: a chart's labels or a board's edge files
    stay in) and centred on mid grey; transparency is flattened onto white. A string instead says
    why it was skipped: "not an image", "corrupt image", "truncated image", "decompression bomb"."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
            w, h = img.size
            if w < 1 or h < 1:
                return "corrupt image"
            if w * h > max_pixels:
                return "decompression bomb"
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # decode at a reduced scale: much faster for large photos
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.new("RGB", rgba.size, (255, 255, 255))
                img.paste(rgba, mask=rgba.getchannel("A"))
            elif img.mode != "RGB":
                img = img.convert("RGB")
            w, h = img.size
            scale = size / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
            if (nw, nh) != (size, size):
                canvas = Image.new("RGB", (size, size), (PAD_GREY,) * 3)
                canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
                img = canvas
            return np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression bomb"
    except Image.UnidentifiedImageError:
        # An image format's magic number that Pillow cannot read any further is a damaged image.
        return "corrupt image" if isinstance(data, bytes) and data.startswith(IMAGE_MAGICS) else "not an image"
    except OSError as exc:
        return "truncated image" if "truncated" in str(exc).lower() else "corrupt image"
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError, ZeroDivisionError):
        return "corrupt image"  # what Pillow's plugins raise on malformed headers


def clean_caption(text: Any, stats: SourceStats) -> str | None:
    """A caption as a stripped string, or None (counted) when empty, too long or holding NUL bytes."""
    if not isinstance(text, str):
        stats.skip("no caption")
        return None
    text = text.strip()
    if not text:
        stats.skip("empty caption")
    elif "\x00" in text:
        stats.skip("NUL bytes")
    elif len(text) > MAX_CAPTION_CHARS:
        stats.skip("caption too long")
    else:
        return text
    return None


def iter_image_source(src: SourceConfig, stats: SourceStats, base_dir: Path | None = None,
                      seed: int = 0) -> Iterator[ImageSample]:
    """Yield the source's samples in order (captions cleaned; images still encoded), counting skips;
    `max_docs` caps the images yielded. A source that cannot be read is one line in `stats.problems`."""
    if src.builtin is not None:
        from engine.data.builtin import IMAGE_SOURCES

        gen = IMAGE_SOURCES.get(src.builtin)
        if gen is None:
            raise DataError(f"builtin:{src.builtin}: unknown built-in image source (known: {', '.join(IMAGE_SOURCES)})")
        samples = gen.generate(seed, src.max_docs or BUILTIN_IMAGES)
    else:
        paths = matched_paths(src, base_dir, stats)
        if not paths:
            return
        samples = _iter_files(src, stats, paths)
    n = 0
    try:
        for sample in samples:
            captions = [c for c in (clean_caption(t, stats) for t in sample.captions) if c is not None]
            if not captions:
                continue
            sample.captions = captions
            n += 1
            yield sample
            if src.max_docs and n >= src.max_docs:
                return
    finally:
        samples.close()


def _iter_files(src: SourceConfig, stats: SourceStats, paths: list[str]) -> Iterator[ImageSample]:
    reader = _read_tar if src.format == "webdataset" else _read_parquet
    for path in paths:
        try:
            yield from reader(path, src, stats)
        except DataError as exc:
            stats.problems.append(f"source {src.name}: {exc}")
        except files.STREAM_ERRORS as exc:
            stats.problems.append(f"source {src.name}: {path}: cannot read ({files.why(exc)}); kept what came before")


def _caption_of(members: dict[str, bytes], src: SourceConfig, fmt: RecordFormat, stats: SourceStats) -> Any:
    wanted = ("txt", "text") if src.field == "text" else (src.field.lower(),)
    for suffix in wanted:
        if members.get(suffix) is _TOO_LARGE:
            return None
        if suffix in members:
            try:
                return members[suffix].decode("utf-8")
            except UnicodeDecodeError:
                stats.skip("invalid UTF-8")
                return ""
    if "json" in members and members["json"] is not _TOO_LARGE:
        try:
            return fmt.render(json.loads(members["json"]))
        except (ValueError, RecordSkip, AttributeError):
            return None
    return None


_TOO_LARGE = b"too large"  # stands for a member skipped unread (compared by identity)


def _read_tar(path: str, src: SourceConfig, stats: SourceStats) -> Iterator[ImageSample]:
    suffixes = image_suffixes(src.image)
    fmt = RecordFormat.of(src.field, "", {})
    caption_suffixes = {"txt", "text", "json", src.field.lower()}
    key, members = None, {}

    def sample() -> ImageSample | None:
        image = next((members[s] for s in suffixes if s in members), None)
        if image is None:
            stats.skip("no image member")
            return None
        if image is _TOO_LARGE:
            return None  # counted when it was seen
        caption = _caption_of(members, src, fmt, stats)
        if caption is None:
            stats.skip("no caption")
            return None
        return ImageSample(f"{path}:{key}", image, [caption])

    try:
        for _, member, read in tar_members(path):
            name = member.name
            base = name.rsplit("/", 1)
            k = (base[0] + "/" if len(base) == 2 else "") + base[-1].split(".", 1)[0]
            if k != key:
                if key is not None and (s := sample()) is not None:
                    yield s
                key, members = k, {}
            suffix = member_suffix(name)
            if suffix in suffixes or suffix in caption_suffixes:
                if member.size > MAX_MEMBER_BYTES:
                    stats.skip("member too large")
                    members[suffix] = _TOO_LARGE
                    continue
                members[suffix] = read()
        if key is not None and (s := sample()) is not None:
            yield s
    except (tarfile.TarError, EOFError) as exc:
        stats.problems.append(f"source {src.name}: {path}: truncated or damaged tar ({exc}); kept what came before")


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) and len(value) else None


def _read_parquet(path: str, src: SourceConfig, stats: SourceStats) -> Iterator[ImageSample]:
    import pyarrow as pa

    fmt = RecordFormat.of(src.field, "", {})
    columns = list(dict.fromkeys([src.image] + fmt.columns))
    opened = open_parquet(path, src, columns, stats)
    if opened is None:
        return
    fh, pf = opened
    try:
        row = 0
        try:
            for group in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=64, row_groups=[group], columns=columns):
                    for rec in batch.to_pylist():
                        row += 1
                        image = _image_bytes(rec.get(src.image))
                        if image is None:
                            stats.skip("no image bytes")
                            continue
                        try:
                            caption = fmt.render(rec)
                        except RecordSkip:
                            stats.skip("no caption")
                            continue
                        yield ImageSample(f"{path}:{row - 1}", image, [caption])
        except (OSError, pa.ArrowException) as exc:
            stats.problems.append(f"source {src.name}: {path}: stopped reading, file is damaged ({exc})")
    finally:
        fh.close()
