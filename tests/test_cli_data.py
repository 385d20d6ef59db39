"""The data commands end to end in a subprocess: build, tokenizer, pretokenize, and their user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data.shards import open_shard
from engine.data.tokenizer import Tokenizer
from tests.conftest import REPO

STDLIB = Path(json.__file__).parent.parent

PROFILE = f"""
[profile]
name = "mini"
[mix]
code = 0.6
science = 0.4
[data]
target_tokens = 60000
heldout_fraction = 0.05
[tokenizer]
vocab_size = 600
sample_chars = 300000
[[sources]]
name = "lib"
domain = "code"
format = "text"
path = "{STDLIB}/json/*.py"
[[sources]]
name = "lib2"
domain = "code"
format = "text"
path = "{STDLIB}/email/*.py"
[[sources]]
name = "notes"
domain = "science"
format = "jsonl"
path = "notes.jsonl"
field = "body"
[[stages]]
name = "s"
seq_len = 32
max_steps = 5
warmup_steps = 1
"""


def fcwork(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcwork.cli", "--workspace", str(ws), *args],
                          capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture
def mini(tmp_path):
    ws = tmp_path / "ws"
    (ws / "profiles").mkdir(parents=True)
    (ws / "profiles" / "mini.toml").write_text(PROFILE)
    with open(ws / "profiles" / "notes.jsonl", "w") as fh:
        for i in range(400):
            fh.write(json.dumps({"body": f"Note {i}: the ratio {i}/{i + 7} is {i / (i + 7):.4f}; energy E = m c^2."}) + "\n")
    return ws


def test_build_train_pretokenize(mini):
    r = fcwork(mini, "data", "build", "mini")
    assert r.returncode == 0, r.stderr
    assert "code" in r.stdout and "science" in r.stdout
    r = fcwork(mini, "tokenizer", "train", "mini")
    assert r.returncode == 0, r.stderr
    assert "tokens/char" in r.stdout
    r = fcwork(mini, "data", "pretokenize", "mini")
    assert r.returncode == 0, r.stderr
    tok = Tokenizer.load(mini / "tokenizers" / "mini.model")
    shard = open_shard(mini / "data" / "mini" / "tok" / "code", expected_hash=tok.hash)
    first = [json.loads(line)["text"] for line in (mini / "data/mini/raw/code.jsonl").read_text().splitlines()][0]
    ids = shard.tokens[: shard.doc_starts[1]].tolist()
    assert ids[-1] == tok.eos_id and tok.decode(ids[:-1]) == first
    r = fcwork(mini, "data", "prepare", "mini")
    assert r.returncode == 0 and "up to date" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("tokenizer", "train", "mini"), "no corpus yet (run `fcwork data build mini` first)"),
        (("data", "pretokenize", "mini"), "no corpus yet"),
        (("data", "build", "nope"), "no such profile"),
        (("tokenizer", "encode", "mini", "x"), "no tokenizer yet"),
    ],
)
def test_user_errors_are_one_line_without_traceback(mini, args, message):
    r = fcwork(mini, *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_profile_is_reported_with_its_key(mini):
    path = mini / "profiles" / "mini.toml"
    path.write_text(path.read_text().replace("seq_len = 32", 'seq_len = "2k"'))
    r = fcwork(mini, "data", "build", "mini")
    assert r.returncode == 2
    assert r.stderr.strip() == f'fcwork: error: {path}: stages[0].seq_len: expected a positive integer, got "2k"'
