"""Shard contents: an id beyond the vocabulary is one line naming the file when the shard is opened
(and a user error for the trainer, never a crash to retry); a checksum per shard lets `fcwork data
verify` find any byte changed after writing; version-1 shards (no max id, no checksum) still read."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from engine.data.shards import (
    HEADER, HEADER_SIZE, V1_HEADER_SIZE, open_shard, verify_shard, write_shard,
)
from engine.errors import ShardError
from tests.conftest import REPO
from tests.train_fixtures import events_of, log_tail, make_run, train_here

HASH = "ab" * 32
DOCS = [[5, 6, 7], [8, 9], list(range(10, 60))]


def _poke(path, position: int, value: int, itemsize: int = 2) -> None:
    """Overwrite one token id of a .bin in place (as a damaged disk or a stray write would)."""
    with open(path, "r+b") as fh:
        fh.seek(HEADER_SIZE + position * itemsize)
        fh.write(value.to_bytes(itemsize, "little"))


def test_an_id_beyond_the_vocabulary_is_refused_when_the_shard_opens(tmp_path):
    write_shard(tmp_path / "code", DOCS, vocab_size=100, tokenizer_hash=HASH, eos_id=2)
    assert open_shard(tmp_path / "code").n_tokens == sum(len(d) + 1 for d in DOCS)
    _poke(tmp_path / "code.bin", 4, 65535)
    with pytest.raises(ShardError) as err:
        open_shard(tmp_path / "code", expected_hash=HASH, expected_vocab=100)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'code.bin'}: token id 65,535 at position 4 is outside the vocabulary 0..99")
    assert "\n" not in message and "pretokenize" in message


def test_the_header_records_the_largest_id(tmp_path):
    info = write_shard(tmp_path / "d", DOCS, vocab_size=100, tokenizer_hash=HASH, eos_id=2)
    head = (tmp_path / "d.bin").read_bytes()[:HEADER_SIZE]
    max_id = struct.unpack_from("<I", head, V1_HEADER_SIZE)[0]
    assert max_id == 59 and info.n_docs == 3


def test_verify_finds_a_changed_byte_and_passes_a_sound_shard(tmp_path):
    write_shard(tmp_path / "d", DOCS, vocab_size=100, tokenizer_hash=HASH, eos_id=2)
    check = verify_shard(tmp_path / "d", HASH, 100)
    assert check.ok and check.version == 2 and check.n_docs == 3 and not check.notes
    _poke(tmp_path / "d.bin", 20, 33)  # still inside the vocabulary: only the checksum can tell
    check = verify_shard(tmp_path / "d", HASH, 100)
    assert [p.split(": ", 1)[1] for p in check.problems] == [
        "checksum mismatch: the file changed after it was written: rerun `fcwork data pretokenize PROFILE`"]
    assert verify_shard(tmp_path / "d", "cd" * 32, 100).problems[0].count("made with tokenizer") == 1


def _as_version_1(prefix) -> None:
    """Rewrite a shard in the version-1 layout: the 64-byte header, no max id, no checksum."""
    for ext in (".bin", ".idx"):
        path = prefix.with_name(prefix.name + ext)
        data = path.read_bytes()
        fields = list(HEADER.unpack(data[:V1_HEADER_SIZE]))
        fields[1] = 1
        path.write_bytes(HEADER.pack(*fields) + data[HEADER_SIZE:])


def test_version_1_shards_still_open_and_verify_says_they_have_no_checksum(tmp_path):
    write_shard(tmp_path / "d", DOCS, vocab_size=100, tokenizer_hash=HASH, eos_id=2)
    before = np.asarray(open_shard(tmp_path / "d").tokens).copy()
    _as_version_1(tmp_path / "d")
    shard = open_shard(tmp_path / "d", expected_hash=HASH, expected_vocab=100)
    assert np.array_equal(np.asarray(shard.tokens), before)
    check = verify_shard(tmp_path / "d", HASH, 100)
    assert check.ok and check.version == 1 and "has no checksum" in check.notes[0]


def test_the_trainer_fails_a_damaged_shard_as_a_user_error_naming_it(train_workspace):
    # This module's own workspace (module scope): damaging its shard touches no other test.
    run = make_run(train_workspace, "short", max_steps=5, eval_every=0)
    shard = train_workspace.ws.tok_dir(train_workspace.profile.name) / "code.bin"
    _poke(shard, 3, 65535)
    assert train_here(run) == 2, log_tail(run)  # the user-error code: the supervisor does not restart it
    error = events_of(run, "error")[-1]["message"]
    assert error.startswith(f"{shard}: token id 65,535 at position 3 is outside the vocabulary"), error


def _fcwork(ws, *args):
    return subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws.root), *args],
                          capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL, timeout=300)


def test_data_verify_reads_every_shard_of_a_profile(tiny_ws):
    ok = _fcwork(tiny_ws, "data", "verify", "tiny")
    assert ok.returncode == 0, ok.stderr
    assert "code" in ok.stdout and "heldout/science" in ok.stdout and "ok" in ok.stdout
    _poke(tiny_ws.tok_dir("tiny") / "heldout" / "science.bin", 1, 7)
    bad = _fcwork(tiny_ws, "data", "verify", "tiny")
    assert bad.returncode == 1
    assert "checksum mismatch" in bad.stdout.replace("\n", "") and "1 problem in the shards of tiny" in bad.stderr
    missing = _fcwork(tiny_ws, "data", "verify", "nosuch")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
