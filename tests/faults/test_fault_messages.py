"""Messages a user acts on say what differs: two tokenizer hashes are shown with enough hex to
tell them apart, and a shard index's numbers are all written the same way."""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
from engine.compat import tomllib

import pytest
import tomli_w

from engine.errors import ShardError, TokenizerError, differing_prefixes
from tests.eval_fixtures import clone_run

HASH = hashlib.sha256(b"tokenizer A").hexdigest()
NEAR = HASH[:40] + ("0" if HASH[40] != "0" else "1") + HASH[41:]  # the same first 40 hex digits


def _shown(message: str, pattern: str) -> tuple[str, str]:
    a, b = re.search(pattern, message).groups()
    return a, b


def test_differing_prefixes():
    a, b = differing_prefixes(HASH, NEAR)
    assert a != b and HASH.startswith(a) and NEAR.startswith(b) and len(a) == len(b) >= 41
    assert differing_prefixes(HASH, hashlib.sha256(b"x").hexdigest()) == (HASH[:12], hashlib.sha256(b"x").hexdigest()[:12])
    assert differing_prefixes(HASH, HASH) == (HASH, HASH)


def test_a_shard_of_a_near_identical_tokenizer(tmp_path):
    from engine.data.shards import open_shard, write_shard

    write_shard(tmp_path / "code", [[5, 6, 7]], 400, HASH, eos_id=2)
    with pytest.raises(ShardError) as err:
        open_shard(tmp_path / "code", expected_hash=NEAR)
    made, want = _shown(str(err.value), r"made with tokenizer (\w+)…, expected (\w+)…")
    assert made != want and HASH.startswith(made) and NEAR.startswith(want)


def test_a_run_whose_tokenizer_changed_in_its_last_digits(eval_workspace):  # noqa: F811
    from engine.eval.run_model import find_checkpoint

    ws = eval_workspace.ws
    run = clone_run(eval_workspace.run, ws.runs_dir / "29980301-000000-nearhash")
    try:
        doc = tomllib.loads((run / "stage.toml").read_text())
        real = doc["paths"]["tokenizer_hash"]
        doc["paths"]["tokenizer_hash"] = real[:-1] + ("0" if real[-1] != "0" else "1")
        (run / "stage.toml").write_text(tomli_w.dumps(doc))
        with pytest.raises(TokenizerError) as err:
            find_checkpoint(run)
    finally:
        shutil.rmtree(run)
    now, says = _shown(str(err.value), r"sha256 (\w+)\.\.\., .* says (\w+)\.\.\.")
    assert now != says and now == real


def test_shard_index_numbers_are_written_one_way(tmp_path):
    from engine.data.shards import HEADER_SIZE, open_shard, write_shard

    write_shard(tmp_path / "code", [list(range(3, 400))] * 3000, 400, HASH, eos_id=2)  # 1,194,000 tokens
    idx = tmp_path / "code.idx"
    data = bytearray(idx.read_bytes())
    data[-8:] = struct.pack("<Q", 1_194_007)  # the total offset no longer matches the .bin
    idx.write_bytes(bytes(data))
    assert len(data) > HEADER_SIZE
    with pytest.raises(ShardError) as err:
        open_shard(tmp_path / "code")
    message = str(err.value).split(": ", 1)[1]
    assert "expected 0 .. 1,194,000, increasing; got 0 .. 1,194,007" in message
    assert not re.search(r"\d{4}", message.replace(",", " ")), message  # no number without its commas
