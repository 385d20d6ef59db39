"""Manifest sources: every format, and every kind of bad data skipped or refused with a count."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.profile import SourceConfig
from engine.data.sources import SourceStats, iter_source


def read(src: SourceConfig, tmp_path, **kw):
    stats = SourceStats()
    docs = list(iter_source(src, stats, base_dir=tmp_path, **kw))
    return docs, stats


def src(fmt: str, path: str, **kw) -> SourceConfig:
    return SourceConfig(name="s", domain="code", format=fmt, path=path, **kw)


def test_text_file_and_paragraph_modes(tmp_path):
    (tmp_path / "a.txt").write_text("first para\nline two\n\nsecond para\n\n\nthird")
    (tmp_path / "b.txt").write_text("whole file")
    docs, stats = read(src("text", "*.txt"), tmp_path)
    assert docs == ["first para\nline two\n\nsecond para\n\n\nthird", "whole file"]
    docs, _ = read(src("text", "*.txt", split="paragraph"), tmp_path)
    assert docs == ["first para\nline two", "second para", "third", "whole file"]
    assert stats.files == 2


def test_text_bad_inputs_are_skipped_and_counted(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1 text")
    (tmp_path / "nul.txt").write_bytes(b"a\x00b")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "ok.txt").write_text("fine")
    docs, stats = read(src("text", "*.txt"), tmp_path)
    assert docs == ["fine"]
    assert stats.skipped == {"invalid UTF-8": 1, "NUL bytes": 1, "empty file": 1}


def test_huge_single_line_is_skipped_without_crashing(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.write(b"x" * (50 * 1024 * 1024))
        fh.write(b"\n\nafter the giant line\n")
    docs, stats = read(src("text", "big.txt", split="paragraph"), tmp_path)
    assert docs == ["after the giant line"]
    assert stats.skipped["line too long"] == 1
    docs, stats = read(src("text", "big.txt"), tmp_path)
    assert docs == [] and stats.skipped["too long"] == 1


def test_jsonl_field_and_bad_lines(tmp_path):
    lines = [json.dumps({"body": "one"}), "{not json", json.dumps({"other": 1}), json.dumps({"body": 5}),
             json.dumps({"body": "two\u00e9"}), "", json.dumps(["list"])]
    (tmp_path / "d.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b'{"body": "\xff"}\n')
    docs, stats = read(src("jsonl", "d.jsonl", field="body"), tmp_path)
    assert docs == ["one", "two\u00e9"]
    assert stats.skipped == {"invalid JSON": 1, "no string field 'body'": 3, "invalid UTF-8": 1}


def test_jsonl_without_the_field_reports_a_problem(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    docs, stats = read(src("jsonl", "d.jsonl", field="content"), tmp_path)
    assert docs == [] and "no line has a string field 'content'" in stats.problems[0]


def test_parquet_streams_batches_and_refuses_missing_column(tmp_path):
    texts = [f"document {i}" for i in range(2000)] + [None]
    pq.write_table(pa.table({"content": texts, "n": list(range(2001))}), tmp_path / "p.parquet", row_group_size=300)
    docs, stats = read(src("parquet", "p.parquet", field="content"), tmp_path)
    assert docs == texts[:-1] and stats.skipped == {"null value": 1}
    docs, stats = read(src("parquet", "p.parquet", field="text"), tmp_path)
    assert docs == [] and "no column 'text' (columns: content, n)" in stats.problems[0]
    docs, stats = read(src("parquet", "p.parquet", field="n"), tmp_path)
    assert docs == [] and "expected strings" in stats.problems[0]
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    docs, stats = read(src("parquet", "junk.parquet"), tmp_path)
    assert docs == [] and "not a readable parquet file" in stats.problems[0]


def make_tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_text_members_and_truncated_tar(tmp_path):
    members = {f"{i:04d}.txt": f"sample {i} " .encode() * 50 for i in range(20)}
    members["0000.jpg"] = b"\xff\xd8 not text"
    make_tar(tmp_path / "shard-0.tar", members)
    docs, stats = read(src("webdataset", "shard-*.tar"), tmp_path)
    assert len(docs) == 20 and stats.skipped == {"non-text member": 1}
    whole = (tmp_path / "shard-0.tar").read_bytes()
    (tmp_path / "shard-0.tar").write_bytes(whole[: len(whole) // 2])
    docs, stats = read(src("webdataset", "shard-*.tar"), tmp_path)
    assert 0 < len(docs) < 20
    assert "truncated or damaged tar" in stats.problems[0]


def test_missing_files_and_limits(tmp_path):
    docs, stats = read(src("text", "nothing/*.txt"), tmp_path)
    assert docs == [] and stats.problems == ["source s: no files match nothing/*.txt"]
    for i in range(10):
        (tmp_path / f"{i}.txt").write_text(f"doc {i}")
    docs, _ = read(src("text", "*.txt", max_docs=3), tmp_path)
    assert len(docs) == 3


@pytest.mark.parametrize("fmt", ["text", "jsonl", "parquet", "webdataset"])
def test_unreadable_path_never_raises(tmp_path, fmt):
    (tmp_path / "x.bin").write_bytes(b"\x00\x01\x02garbage\xff" * 10)
    docs, stats = read(src(fmt, "x.bin"), tmp_path)
    assert docs == []
    assert stats.skipped or stats.problems
