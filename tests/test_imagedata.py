"""Image-text data: the image shard format (round trips, every refusal), Pillow decoding of bad images,
real WebDataset tars and Parquet files with corrupt, truncated, non-image and bomb members, and the
build (counts in the manifest, nothing redone when current, caption shards, verify)."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.data.imageshards import (HEADER_SIZE, IMG_MAGIC, PAIR_MAGIC, ImageShardWriter, image_paths, open_images,
                                     parse_header, verify_images)
from engine.data.imagesources import decode_image, iter_image_source
from engine.data.sources import SourceStats
from engine.errors import ShardError
from engine.profile import SourceConfig, loads_profile


def _write(prefix: Path, images: list[np.ndarray], pairs: list[tuple[int, int]], size: int) -> None:
    with ImageShardWriter(prefix, size) as w:
        for img in images:
            w.add_image(img)
        for k, n in pairs:
            w.add_pair(k, n)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 6), n=st.integers(0, 5), data=st.data())
def test_image_shard_round_trip(tmp_path, size, n, data):
    rng = np.random.default_rng(n * 7 + size)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 2**32 - 1)), max_size=8)) if n else []
    _write(tmp_path / "d", images, pairs, size)
    shard = verify_images(tmp_path / "d")
    assert (shard.n_images, shard.n_pairs, shard.size) == (n, len(pairs), size)
    assert all(np.array_equal(shard.image(k), images[k]) for k in range(n))
    assert [tuple(map(int, p)) for p in shard.pairs] == pairs


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=HEADER_SIZE + 8), st.sampled_from([IMG_MAGIC, PAIR_MAGIC]))
def test_header_parser_never_fails_but_with_one_line(data, magic):
    try:
        h = parse_header(data, "x.img", magic)
    except ShardError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("x.img: ")
    else:
        assert h.magic == magic


@pytest.fixture
def small_shard(tmp_path):
    images = [np.full((4, 4, 3), k, np.uint8) for k in range(3)]
    _write(tmp_path / "d", images, [(0, 5), (2, 7), (2, 1)], 4)
    return tmp_path / "d"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, HEADER_SIZE + 3 * 48 - 1), which=st.sampled_from([0, 1]))
def test_any_truncation_is_refused(small_shard, cut, which):
    path = image_paths(small_shard)[which]
    whole = path.read_bytes()
    cut = min(cut, len(whole) - 1)
    try:
        path.write_bytes(whole[:cut])
        with pytest.raises(ShardError, match=path.name):
            open_images(small_shard)
    finally:
        path.write_bytes(whole)


def test_refusals_name_the_file(small_shard, tmp_path):
    img, pairs = image_paths(small_shard)
    raw = bytearray(img.read_bytes())
    raw[HEADER_SIZE + 5] ^= 1  # one pixel changed after writing: only the checksum sees it
    img.write_bytes(bytes(raw))
    open_images(small_shard)
    with pytest.raises(ShardError, match="checksum mismatch"):
        verify_images(small_shard)
    with pytest.raises(ShardError, match="expected 8 px"):
        open_images(small_shard, expected_size=8)
    _write(tmp_path / "other", [np.zeros((4, 4, 3), np.uint8)] * 3, [], 4)
    other_pairs = image_paths(tmp_path / "other")[1]
    pairs.write_bytes(other_pairs.read_bytes())
    with pytest.raises(ShardError, match="pair ids differ"):
        open_images(small_shard)
    bad = bytearray(img.read_bytes())
    struct.pack_into("<H", bad, 8, 9)
    img.write_bytes(bytes(bad))
    with pytest.raises(ShardError, match="version 9"):
        open_images(small_shard)


def test_writer_refuses_and_aborts_cleanly(tmp_path):
    with pytest.raises(ShardError, match="expected uint8 4x4x3"):
        with ImageShardWriter(tmp_path / "d", 4) as w:
            w.add_image(np.zeros((4, 5, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


# -- bad images in real files ---------------------------------------------------------------------

def _encoded(fmt: str, size=(40, 30), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 100_000) -> bytes:
    """A valid PNG header declaring side x side pixels (1 bit grey), with almost no data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


GOOD_JPG = _encoded("JPEG")
BAD = {
    "corrupt": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4,
    "truncated": GOOD_JPG[: len(GOOD_JPG) // 2],
    "not-image": b"hello, I am text in a .jpg",
    "bomb": bomb_png(),
    "bomb-below-pillow": bomb_png(5000),  # 25M pixels: Pillow lets it through, our limit (20M) does not
}
EXPECTED_SKIPS = {"corrupt image": 1, "truncated image": 1, "not an image": 1, "decompression bomb": 2,
                  "no caption": 1, "no image member": 1}


def test_decode_letterboxes_and_names_what_is_wrong():
    out = decode_image(_encoded("PNG", (40, 20)), 8, 20_000_000)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (128, 128, 128) and tuple(out[4, 4]) == pytest.approx((200, 30, 30), abs=3)
    reasons = {k: decode_image(v, 8, 20_000_000) for k, v in BAD.items()}
    assert reasons == {"corrupt": "corrupt image", "truncated": "truncated image", "not-image": "not an image",
                       "bomb": "decompression bomb", "bomb-below-pillow": "decompression bomb"}


def make_tar(path: Path) -> None:
    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        add(tar, "s/000.jpg", GOOD_JPG)
        add(tar, "s/000.txt", b"a red rectangle")
        add(tar, "s/001.png", _encoded("PNG", (20, 50), (0, 0, 255)))
        add(tar, "s/001.json", json.dumps({"text": "a blue bar", "url": "x"}).encode())
        for k, (name, data) in enumerate(BAD.items(), start=2):
            add(tar, f"s/{k:03d}.jpg", data)
            add(tar, f"s/{k:03d}.txt", f"bad {name}".encode())
        add(tar, "s/010.webp", _encoded("WEBP"))  # an image without a caption
        add(tar, "s/011.txt", b"a caption without an image")
        add(tar, "s/012.jpg", _encoded("JPEG", (10, 10), (0, 255, 0)))
        add(tar, "s/012.txt", b"a green square")


def make_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(GOOD_JPG, "a red rectangle"), (_encoded("PNG", (20, 50), (0, 0, 255)), "a blue bar")]
    rows += [(data, f"bad {name}") for name, data in BAD.items()]
    rows += [(_encoded("WEBP"), None), (None, "a caption without an image"),
             (_encoded("JPEG", (10, 10), (0, 255, 0)), "a green square")]
    image = pa.array([{"bytes": b, "path": f"{k}.jpg"} for k, (b, _) in enumerate(rows)],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": image, "caption": [t for _, t in rows]}), path, row_group_size=4)


def _read(src: SourceConfig, size: int = 16) -> tuple[list, SourceStats]:
    stats = SourceStats()
    out = []
    for sample in iter_image_source(src, stats):
        pixels = decode_image(sample.image, size, 20_000_000)
        if isinstance(pixels, str):
            stats.skip(pixels)
        else:
            out.append(sample.captions[0])
    return out, stats


def test_webdataset_tar_with_bad_members(tmp_path):
    make_tar(tmp_path / "shard-0.tar")
    src = SourceConfig(name="wds", domain="caption", format="webdataset", path=str(tmp_path / "*.tar"), image="auto")
    captions, stats = _read(src)
    assert captions == ["a red rectangle", "a blue bar", "a green square"]
    assert dict(stats.skipped) == EXPECTED_SKIPS and stats.problems == []
    whole = (tmp_path / "shard-0.tar").read_bytes()
    (tmp_path / "shard-0.tar").write_bytes(whole[: len(whole) // 3])  # cut inside the bad members
    captions, stats = _read(src)
    assert captions == ["a red rectangle", "a blue bar"]
    assert len(stats.problems) == 1 and "truncated or damaged tar" in stats.problems[0]


def test_parquet_hf_image_column_with_bad_rows(tmp_path):
    make_parquet(tmp_path / "train.parquet")
    src = SourceConfig(name="pq", domain="caption", format="parquet", path=str(tmp_path / "train.parquet"),
                       image="image", field="caption")
    captions, stats = _read(src)
    assert captions == ["a red rectangle", "a blue bar", "a green square"]
    assert {k: v for k, v in stats.skipped.items() if v} == {
        "corrupt image": 1, "truncated image": 1, "not an image": 1, "decompression bomb": 2, "no caption": 1,
        "no image bytes": 1}
    src = SourceConfig(name="pq", domain="caption", format="parquet", path=str(tmp_path / "train.parquet"),
                       image="picture", field="caption")
    assert _read(src)[0] == [] and "no column 'picture'" in _read(src)[1].problems[0]


# -- the build ------------------------------------------------------------------------------------

IMAGE_SOURCES = """
[[sources]]
name = "wds"
domain = "caption"
format = "webdataset"
path = "{tmp}/*.tar"
image = "jpg;png;webp"

[[sources]]
name = "pq"
domain = "caption"
format = "parquet"
path = "{tmp}/*.parquet"
image = "image"
field = "caption"

[[sources]]
name = "charts"
domain = "caption"
format = "builtin:charts"
max_docs = 40
"""


def test_build_counts_skips_and_is_incremental(train_workspace, tmp_path):
    from engine.data import imagedata

    tw = train_workspace
    make_tar(tmp_path / "a.tar")
    make_parquet(tmp_path / "b.parquet")
    text = tw.profile.path.read_text().replace("chess = 0.2", "chess = 0.2\ncaption = 0")
    text = text.replace("[tokenizer]", "[data]\nimage_size = 16\nmax_image_pixels = 20_000_000\n\n[tokenizer]")
    text += IMAGE_SOURCES.format(tmp=tmp_path)
    path = tw.ws.profiles_dir / "imgfx.toml"
    path.write_text(text.replace('name = "trainfx"', 'name = "imgfx"'))
    prof = loads_profile(path.read_text(), str(path), path)
    prof.tokenizer.name = tw.profile.tokenizer_name
    assert prof.image_domains == ["caption"]
    assert imagedata.prepare_images(tw.ws, prof) is True
    m = imagedata.read_image_manifest(tw.ws, prof)["domains"]["caption"]
    assert m["sources"] == {"wds": 3, "pq": 0, "charts": 40}  # the parquet rows are the tar's images again
    assert m["duplicates"] == 3
    skips = {k: 2 * v for k, v in EXPECTED_SKIPS.items()}
    skips["no image bytes"], skips["no image member"] = 1, 1
    assert m["skipped"] == skips and m["problems"] == []
    assert m["images"] + m["heldout_images"] == 43 and m["pairs"] + m["heldout_pairs"] == 43
    assert imagedata.prepare_images(tw.ws, prof) is False  # current: nothing redone
    data = imagedata.open_image_data(tw.ws, prof, tokenizer_hash=tw.tokenizer_hash)["caption"]
    held = imagedata.open_image_data(tw.ws, prof, heldout=True)["caption"]
    assert (data.n_pairs, held.n_pairs) == (m["pairs"], m["heldout_pairs"])
    assert data.image(0).shape == (16, 16, 3)
    from engine.data.tokenizer import Tokenizer

    first = json.loads((imagedata.image_dir(tw.ws, prof, 16) / "caption.captions.jsonl").read_text().splitlines()[0])
    assert Tokenizer.load(tw.tokenizer_path).decode(data.caption(0).tolist()) == first["text"]
    assert data.caption_bytes(0) == len(first["text"].encode())
    # Another size is another build beside it; the first stays current.
    assert imagedata.prepare_images(tw.ws, prof, size=8) is True
    assert imagedata.open_image_data(tw.ws, prof, size=8)["caption"].image(0).shape == (8, 8, 3)
    assert imagedata.images_are_current(tw.ws, prof, 16)
    # `fcwork data verify` reads the image shards and the caption shards too, and names a damaged one.
    from tests.test_cli_data import fcwork

    ok = fcwork(tw.ws.root, "data", "verify", "imgfx")
    assert ok.returncode == 0 and "16px/caption.img" in ok.stdout and "16px/heldout/caption.cap" in ok.stdout
    img = imagedata.image_dir(tw.ws, prof, 16) / "caption.img"
    raw = bytearray(img.read_bytes())
    raw[-1] ^= 0xFF
    img.write_bytes(bytes(raw))
    bad = fcwork(tw.ws.root, "data", "verify", "imgfx")
    assert bad.returncode == 1 and "checksum mismatch" in bad.stdout and "1 problem" in bad.stderr


def test_held_out_pairs_keep_their_ground_truth(train_workspace):
    from engine.data import imagedata

    tw = train_workspace
    path = tw.ws.profiles_dir / "truthfx.toml"
    text = tw.profile.path.read_text().replace('name = "trainfx"', 'name = "truthfx"').replace(
        "chess = 0.2", "chess = 0.2\ncaption = 0").replace("[tokenizer]", "[data]\nimage_size = 8\nheldout_fraction = 0.2\n\n[tokenizer]")
    path.write_text(text + '\n[[sources]]\nname = "boards"\ndomain = "caption"\nformat = "builtin:chess-diagrams"\nmax_docs = 30\n')
    prof = tw.ws.load_profile("truthfx")
    imagedata.build_images(tw.ws, prof)
    held = imagedata.pair_records(tw.ws, prof, "caption")
    assert held and all(r["source"] == "boards" for r in held)
    fen_pairs = [r for r in held if r["text"].startswith("FEN: ")]
    assert fen_pairs and all(r["text"] == "FEN: " + r["meta"]["fen"] for r in fen_pairs)
    import chess

    assert all(chess.Board(r["meta"]["fen"] + " w - - 0 1").board_fen() == r["meta"]["fen"] for r in fen_pairs)
    from engine.errors import DataError

    with pytest.raises(DataError, match="missing"):
        imagedata.pair_records(tw.ws, prof, "nope")


@pytest.mark.parametrize("extra, message", [
    ('image = "jpg"\nformat = "jsonl"\npath = "x"', "sources[0].image: only for formats webdataset, parquet"),
    ('image = "jpg"\nformat = "parquet"\npath = "x"\ntemplate = "{a}"', "sources[0].template: not for image-text"),
])
def test_image_keys_are_checked(extra, message):
    from engine.errors import ProfileError

    base = '[profile]\nname = "p"\n[mix]\ncaption = 1\n[[sources]]\nname = "s"\ndomain = "caption"\n'
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loads_profile(base + extra, "p.toml")


def test_text_and_image_sources_keep_their_domains_apart():
    from engine.data.corpus import check_domains, domain_shares
    from engine.errors import ProfileError

    base = ('[profile]\nname = "p"\n[mix]\ncode = 1\ncaption = 0.5\n'
            '[[sources]]\nname = "c"\ndomain = "code"\nformat = "text"\npath = "x"\n'
            '[[sources]]\nname = "i"\ndomain = "caption"\nformat = "builtin:charts"\n')
    prof = loads_profile(base)
    assert prof.image_domains == ["caption"] and domain_shares(prof) == {"code": 1.0}
    check_domains(prof)  # a weighted image-text domain needs no text corpus
    with pytest.raises(ProfileError, match="sources.2..domain: expected a domain without image-text sources"):
        loads_profile(base + '[[sources]]\nname = "t"\ndomain = "caption"\nformat = "text"\npath = "y"\n')


GOOD_PNG = _encoded("PNG", (24, 16), (10, 200, 90))


@settings(max_examples=80, deadline=None)
@given(base=st.sampled_from([GOOD_JPG, GOOD_PNG, _encoded("WEBP"), _encoded("GIF")]), data=st.data())
def test_damaged_images_never_raise(base, data):
    """Cut short and bytes flipped anywhere: decoding gives pixels or a reason, never an exception."""
    raw = bytearray(base[: data.draw(st.integers(0, len(base)), label="cut")])
    for pos in data.draw(st.lists(st.integers(0, max(len(raw) - 1, 0)), max_size=4), label="flips"):
        if raw:
            raw[pos] ^= 0xA5
    out = decode_image(bytes(raw), 8, 20_000_000)
    assert isinstance(out, str) or (out.shape == (8, 8, 3) and out.dtype == np.uint8)
