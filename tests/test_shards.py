"""Token shards: round trips, dtype choice, every refusal of the reader, and atomic writes."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.data.shards as shards_mod
from engine.errors import DataError, ShardError
from engine.data.shards import HEADER_SIZE, ShardWriter, open_shard, token_dtype, write_shard

HASH = hashlib.sha256(b"tokenizer A").hexdigest()
OTHER = hashlib.sha256(b"tokenizer B").hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    vocab=st.sampled_from([3, 300, 65536, 65537, 200_000]),
    docs=st.lists(st.lists(st.integers(0, 10**6), max_size=30), max_size=12),
)
def test_round_trip(tmp_path, vocab, docs):
    docs = [[x % vocab for x in d] for d in docs]
    info = write_shard(tmp_path / "d", docs, vocab, HASH, eos_id=2)
    shard = open_shard(tmp_path / "d", expected_hash=HASH, expected_vocab=vocab)
    assert (info.n_docs, info.n_tokens) == (shard.n_docs, shard.n_tokens) == (len(docs), sum(len(d) + 1 for d in docs))
    assert shard.tokenizer_hash == info.tokenizer_hash == HASH
    assert shard.vocab_size == vocab
    assert shard.doc_starts.dtype == np.uint64 and len(shard.doc_starts) == len(docs) + 1
    assert shard.tokens.tolist() == [t for d in docs for t in d + [2]]
    for k, d in enumerate(docs):
        assert shard.doc(k).tolist() == d
        assert int(shard.tokens[shard.doc_starts[k + 1] - 1]) == 2


@pytest.mark.parametrize("vocab, dtype", [(8000, np.uint16), (65536, np.uint16), (65537, np.uint32), (151_936, np.uint32)])
def test_dtype_follows_vocabulary(tmp_path, vocab, dtype):
    top = vocab - 1
    info = write_shard(tmp_path / "d", [np.array([0, top, top - 1])], vocab, HASH, eos_id=2)
    shard = open_shard(tmp_path / "d")
    assert shard.tokens.dtype == dtype and info.dtype == np.dtype(dtype).name
    assert isinstance(shard.tokens, np.memmap)
    assert shard.tokens.tolist() == [0, top, top - 1, 2]
    assert (tmp_path / "d.bin").stat().st_size == HEADER_SIZE + 4 * np.dtype(dtype).itemsize
    assert token_dtype(vocab) == dtype


def test_streams_in_blocks_and_arrays_of_any_int_dtype(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_mod, "FLUSH_TOKENS", 5)  # force many flushes
    docs = [np.arange(n, dtype=dt) for n, dt in zip(range(1, 40), [np.int8, np.uint16, np.int64, np.uint32] * 10)]
    write_shard(tmp_path / "d", iter(docs), 1000, HASH, eos_id=999)
    shard = open_shard(tmp_path / "d")
    assert shard.n_docs == len(docs)
    for k, d in enumerate(docs):
        assert np.array_equal(shard.doc(k), d)
        assert shard.tokens[int(shard.doc_starts[k + 1]) - 1] == 999


def test_empty_shard(tmp_path):
    write_shard(tmp_path / "e", [], 100, HASH, eos_id=2)
    shard = open_shard(tmp_path / "e")
    assert (shard.n_docs, shard.n_tokens, shard.doc_starts.tolist(), shard.tokens.size) == (0, 0, [0], 0)


@pytest.fixture
def shard_path(tmp_path) -> Path:
    ws_tok = tmp_path / "ws" / "data" / "myprof" / "tok"
    write_shard(ws_tok / "code", [[5, 6, 7], [8, 9]], 8000, HASH, eos_id=2)
    return ws_tok / "code"


def _refusal(prefix: Path, **kw) -> str:
    with pytest.raises(ShardError) as err:
        open_shard(prefix, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_truncated_bin(shard_path):
    b = shard_path.with_suffix(".bin")
    b.write_bytes(b.read_bytes()[:-1])
    msg = _refusal(shard_path)
    assert str(b) in msg and "truncated" in msg and "7 tokens" in msg


def test_truncated_header(shard_path):
    b = shard_path.with_suffix(".bin")
    b.write_bytes(b.read_bytes()[:40])
    assert "truncated" in _refusal(shard_path)


def test_trailing_bytes(shard_path):
    b = shard_path.with_suffix(".bin")
    b.write_bytes(b.read_bytes() + b"\0\0")
    assert "trailing bytes" in _refusal(shard_path)


def test_truncated_idx(shard_path):
    i = shard_path.with_suffix(".idx")
    i.write_bytes(i.read_bytes()[:-8])
    msg = _refusal(shard_path)
    assert str(i) in msg and "truncated" in msg


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04" + b"\0" * 100])
def test_bad_magic(shard_path, content):
    b = shard_path.with_suffix(".bin")
    b.write_bytes(content)
    msg = _refusal(shard_path)
    assert msg.startswith(f"{b}: not a FusterCluck shard")


def test_idx_in_place_of_bin(shard_path):
    b, i = shard_path.with_suffix(".bin"), shard_path.with_suffix(".idx")
    b.write_bytes(i.read_bytes())
    assert "not a FusterCluck shard" in _refusal(shard_path)


def test_wrong_version(shard_path):
    b = shard_path.with_suffix(".bin")
    data = bytearray(b.read_bytes())
    data[8:10] = struct.pack("<H", 7)
    b.write_bytes(bytes(data))
    msg = _refusal(shard_path)
    assert "version 7 is not supported" in msg and "fcwork data pretokenize myprof" in msg


def test_hash_mismatch(shard_path):
    msg = _refusal(shard_path, expected_hash=OTHER)
    assert msg == (
        f"{shard_path.with_suffix('.bin')}: made with tokenizer {HASH[:8]}…, expected {OTHER[:8]}…: "
        "rerun `fcwork data pretokenize myprof`"
    )
    assert isinstance(ShardError("x"), DataError)
    open_shard(shard_path, expected_hash=HASH.upper())  # hex case does not matter


def test_vocab_mismatch(shard_path):
    assert "vocabulary of 8,000, expected 9,000" in _refusal(shard_path, expected_vocab=9000)


def test_idx_from_another_write(shard_path, tmp_path):
    other = tmp_path / "other"
    write_shard(other, [[5, 6, 7], [8, 9]], 8000, HASH, eos_id=2)  # same shape, separate write
    shard_path.with_suffix(".idx").write_bytes(other.with_suffix(".idx").read_bytes())
    assert "does not belong to code.bin" in _refusal(shard_path)


def test_idx_offsets_disagree(shard_path):
    i = shard_path.with_suffix(".idx")
    data = bytearray(i.read_bytes())
    data[-8:] = struct.pack("<Q", 6)
    i.write_bytes(bytes(data))
    assert "offsets disagree" in _refusal(shard_path)


def test_missing_files(shard_path):
    shard_path.with_suffix(".idx").unlink()
    assert "missing index" in _refusal(shard_path)
    shard_path.with_suffix(".bin").unlink()
    msg = _refusal(shard_path)
    assert str(shard_path.with_suffix(".bin")) in msg and "no such shard" in msg


@pytest.mark.parametrize(
    "docs, vocab, tok_hash, message",
    [
        ([[1, 2, 100]], 100, HASH, "document 0: token id 100 outside the vocabulary 0..99"),
        ([[1], [-1]], 100, HASH, "document 1: token id -1 outside"),
        ([[1.5]], 100, HASH, "expected integer token ids, got float64"),
        ([[[1, 2]]], 100, HASH, "expected a flat sequence of ids"),
        ([[1]], 100, "abc", "tokenizer hash 'abc': expected 64 hex digits"),
        ([[1]], 0, HASH, "vocab_size 0"),
    ],
)
def test_writer_refusals(tmp_path, docs, vocab, tok_hash, message):
    with pytest.raises(ShardError) as err:
        write_shard(tmp_path / "d", docs, vocab, tok_hash, eos_id=2)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert _files(tmp_path) == []


def test_crash_midway_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_mod, "FLUSH_TOKENS", 4)  # so some tokens already hit the temp file

    def docs():
        for k in range(10):
            yield [k, k + 1, k + 2]
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_shard(tmp_path / "d", docs(), 100, HASH, eos_id=2)
    assert _files(tmp_path) == []


def test_crash_keeps_previous_shard(tmp_path):
    write_shard(tmp_path / "d", [[1, 2, 3]], 100, HASH, eos_id=2)
    before = {n: (tmp_path / n).read_bytes() for n in ("d.bin", "d.idx")}

    def docs():
        yield [4, 5]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path / "d", docs(), 100, OTHER, eos_id=2)
    assert _files(tmp_path) == ["d.bin", "d.idx"]
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert open_shard(tmp_path / "d", expected_hash=HASH).tokens.tolist() == [1, 2, 3, 2]


def test_writer_context_and_block_append(tmp_path):
    with ShardWriter(tmp_path / "w", 50, HASH, eos_id=2) as w:
        w.add([7, 8])
        w.add_encoded(np.array([9, 2, 10, 11, 2], np.uint16), np.array([2, 3]))
    shard = open_shard(tmp_path / "w")
    assert shard.tokens.tolist() == [7, 8, 2, 9, 2, 10, 11, 2]
    assert shard.doc_starts.tolist() == [0, 3, 5, 8]
    with pytest.raises(ShardError, match="lengths sum to 4"), ShardWriter(tmp_path / "x", 50, HASH, 2) as w:
        w.add_encoded(np.array([1, 2, 3]), np.array([4]))
    assert _files(tmp_path) == ["w.bin", "w.idx"]


def test_temp_files_are_beside_the_target(tmp_path):
    w = ShardWriter(tmp_path / "sub" / "d", 50, HASH, eos_id=2)
    w.add([1])
    names = _files(tmp_path / "sub")
    assert len(names) == 2 and all(n.startswith(".d.") and n.endswith(".tmp") for n in names)
    w.close()
    assert _files(tmp_path / "sub") == ["d.bin", "d.idx"]
    assert os.access(tmp_path / "sub" / "d.bin", os.R_OK)
