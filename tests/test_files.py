"""Source files as streams: compressed files, fsspec URLs, a Hugging Face cache offline, and resuming
a source from its cursor."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data import files
from engine.data.sources import SourceCursor, SourceStats, iter_source
from engine.profile import SourceConfig

COMPRESS = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
}


def src(fmt: str, path: str, **kw) -> SourceConfig:
    return SourceConfig(name="s", domain="code", format=fmt, path=path, **kw)


def read(source: SourceConfig, base=None, cursor: SourceCursor | None = None, limit: int = 0):
    stats = SourceStats(cursor=cursor or SourceCursor())
    out = []
    for doc in iter_source(source, stats, base_dir=base):
        out.append(doc)
        if limit and len(out) >= limit:
            break
    return out, stats


def jsonl(docs) -> bytes:
    return "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_compressed_jsonl_reads_like_plain(tmp_path, suffix):
    docs = [f"document {i} " + "é" * (i % 7) for i in range(3000)]
    (tmp_path / f"d.jsonl{suffix}").write_bytes(COMPRESS[suffix](jsonl(docs)))
    got, stats = read(src("jsonl", "d.jsonl*"), tmp_path)
    assert got == docs and not stats.problems


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_truncated_compressed_file_keeps_what_came_before(tmp_path, suffix):
    docs = [f"line {i} " * 20 for i in range(20000)]
    data = COMPRESS[suffix](jsonl(docs))
    (tmp_path / f"d.jsonl{suffix}").write_bytes(data[: len(data) * 2 // 3])
    got, stats = read(src("jsonl", "d.jsonl*"), tmp_path)
    assert 0 < len(got) < len(docs) and got == docs[: len(got)]
    assert len(stats.problems) == 1 and "d.jsonl" in stats.problems[0] and "kept what came before" in stats.problems[0]


def test_suffix_that_lies_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "d.jsonl.zst").write_bytes(jsonl(["plain text"]))
    got, stats = read(src("jsonl", "d.jsonl.zst"), tmp_path)
    assert got == []
    assert stats.problems == [f"source s: {tmp_path / 'd.jsonl.zst'}: not a zstd stream "
                              f"(its suffix says zstd; first bytes b'{{\"te')"]


def test_zstd_frames_back_to_back_and_a_long_window(tmp_path):
    a, b = jsonl(["first frame"] * 3), jsonl(["second frame"])
    long = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters.from_level(
        3, window_log=27, enable_ldm=True)).compress(b)
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(a) + long)
    got, _ = read(src("jsonl", "d.jsonl.zst"), tmp_path)
    assert got == ["first frame"] * 3 + ["second frame"]


def test_memory_filesystem_glob_parquet_and_jsonl():
    root = f"memory://fc-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    with fs.open(f"{root}/a/1.jsonl.gz", "wb") as fh:
        fh.write(gzip.compress(jsonl(["one", "two"])))
    with fs.open(f"{root}/a/2.jsonl", "wb") as fh:
        fh.write(jsonl(["three"]))
    got, stats = read(src("jsonl", f"{root}/a/*.jsonl*"))
    assert got == ["one", "two", "three"] and stats.files == 2
    buf = io.BytesIO()
    pq.write_table(pa.table({"content": [f"row {i}" for i in range(1000)]}), buf, row_group_size=100)
    with fs.open(f"{root}/p.parquet", "wb") as fh:
        fh.write(buf.getvalue())
    got, _ = read(src("parquet", f"{root}/p.parquet", field="content"))
    assert got == [f"row {i}" for i in range(1000)]
    got, stats = read(src("jsonl", f"{root}/nothing/*.jsonl"))
    assert got == [] and stats.problems == [f"source s: no files match {root}/nothing/*.jsonl"]


def test_file_url_and_unknown_protocol(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(jsonl(["local"]))
    assert read(src("jsonl", f"file://{tmp_path}/*.jsonl"))[0] == ["local"]
    got, stats = read(src("jsonl", "nosuchproto://x/*.jsonl"))
    assert got == [] and stats.problems[0].startswith("source s: nosuchproto://x/*.jsonl: no filesystem for this URL")


def test_hugging_face_cache_offline(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "datasets--org--corpus"
    blobs, snap = repo / "blobs", repo / "snapshots" / "abc123" / "data"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (blobs / "f00d").write_bytes(zstandard.ZstdCompressor().compress(jsonl(["cached doc"])))
    os.symlink(blobs / "f00d", snap / "train-0.jsonl.zst")  # the hub's layout: snapshots link to blobs
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got, stats = read(src("jsonl", "hf://datasets/org/corpus/data/*.jsonl.zst"))
    assert got == ["cached doc"], stats.problems
    got, _ = read(src("jsonl", str(snap / "*.jsonl.zst")))  # the cache folder itself, as a local glob
    assert got == ["cached doc"]
    got, stats = read(src("jsonl", "hf://datasets/org/other/*.jsonl"))
    assert got == [] and "HF_HUB_OFFLINE is set and the dataset is not in" in stats.problems[0]


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_webdataset_streams_compressed_and_spots_a_cut(tmp_path, suffix):
    members = {f"{i:04d}.txt": f"sample {i}".encode() for i in range(50)}
    data = make_tar(members)
    (tmp_path / f"s.tar{suffix}").write_bytes(COMPRESS[suffix](data))
    got, stats = read(src("webdataset", "s.tar*"), tmp_path)
    assert got == [f"sample {i}" for i in range(50)] and not stats.problems
    cut = data[: 512 * 40]  # between members: no end-of-archive marker
    (tmp_path / f"s.tar{suffix}").write_bytes(COMPRESS[suffix](cut))
    got, stats = read(src("webdataset", "s.tar*"), tmp_path)
    assert 0 < len(got) < 50 and "truncated or damaged tar" in stats.problems[0]


PGN = """[Event "Rated Blitz game"]
[White "a"]
[Black "b"]
[Result "1-0"]
[WhiteElo "2100"]
[BlackElo "2050"]
[TimeControl "180+2"]

1. e4 e5 2. Qh5 Nc6 3. Bc4 Nf6 4. Qxf7# 1-0

"""


def corpus_files(tmp_path):
    """One source of each resumable kind, with its documents in order."""
    docs = [f"doc {i} " + "x" * (i % 13) for i in range(400)]
    (tmp_path / "a.jsonl.zst").write_bytes(COMPRESS[".zst"](jsonl(docs[:250])))
    (tmp_path / "b.jsonl").write_bytes(jsonl(docs[250:]))
    pq.write_table(pa.table({"t": docs}), tmp_path / "p.parquet", row_group_size=37)
    (tmp_path / "w.tar.gz").write_bytes(gzip.compress(make_tar({f"{i:04d}.txt": d.encode() for i, d in enumerate(docs)})))
    (tmp_path / "t.txt.bz2").write_bytes(bz2.compress("\n\n".join(docs).encode()))
    games = "".join(PGN.replace('"a"', f'"p{i}"') for i in range(60))
    (tmp_path / "g.pgn.zst").write_bytes(COMPRESS[".zst"](games.encode()))
    return {
        "jsonl": src("jsonl", "*.jsonl*"),
        "parquet": src("parquet", "p.parquet", field="t"),
        "webdataset": src("webdataset", "w.tar.gz"),
        "text": src("text", "t.txt.bz2", split="paragraph"),
        "pgn": src("pgn", "g.pgn.zst"),
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    return tmp, corpus_files(tmp)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["jsonl", "parquet", "webdataset", "text", "pgn"]), cut=st.integers(0, 420))
def test_resuming_from_a_cursor_gives_exactly_the_rest(sources, kind, cut):
    tmp, srcs = sources
    whole, _ = read(srcs[kind], tmp)
    first, stats = read(srcs[kind], tmp, limit=cut)
    saved = SourceCursor.from_dict(json.loads(json.dumps(stats.cursor.to_dict())))  # as the manifest keeps it
    rest, _ = read(srcs[kind], tmp, cursor=saved)
    assert first + rest == whole


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.binary(max_size=3000), max_size=8), level=st.integers(1, 5))
def test_zstd_reader_matches_the_input_over_frames(chunks, level):
    cctx = zstandard.ZstdCompressor(level=level)
    data = b"".join(cctx.compress(c) for c in chunks)
    reader = io.BufferedReader(files.ZstdReader(io.BytesIO(data)))
    assert reader.read() == b"".join(chunks)


def test_compression_names():
    assert files.compression("x/a.PGN.ZST") == "zstd" and files.compression("a.jsonl") is None
    assert files.strip_compression("a.pgn.zst") == "a.pgn" and files.strip_compression("b.tgz") == "b.tar"
