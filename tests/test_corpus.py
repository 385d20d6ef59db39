"""Corpus build: quotas from the mix, exact dedup, a deterministic disjoint held-out split, atomic output."""

from __future__ import annotations

import json

import pytest

from engine.data.corpus import build_corpus, domain_quotas, read_manifest
from engine.errors import DataError
from engine.profile import loads_profile

PROFILE = """
[profile]
name = "mini"
seed = 7
[mix]
code = 0.5
science = 0.5
chess = 0.0
[data]
target_tokens = {tokens}
heldout_fraction = 0.1
chars_per_token = 4.0
min_doc_chars = 5
[[sources]]
name = "code-files"
domain = "code"
format = "text"
path = "code/*.txt"
[[sources]]
name = "sci"
domain = "science"
format = "jsonl"
path = "sci.jsonl"
[[sources]]
name = "sci-missing"
domain = "science"
format = "jsonl"
path = "missing/*.jsonl"
optional = true
[[sources]]
name = "chess-off"
domain = "chess"
format = "text"
path = "chess/*.pgn"
"""


def make_profile(tmp_path, tokens=10_000):
    (tmp_path / "code").mkdir(exist_ok=True)
    for i in range(300):
        (tmp_path / "code" / f"{i:03d}.txt").write_text(f"def f{i}(x):\n    return x * {i}\n" * 3)
    for i in range(20):  # exact duplicates of earlier files
        (tmp_path / "code" / f"dup{i:03d}.txt").write_text(f"def f{i}(x):\n    return x * {i}\n" * 3)
    with open(tmp_path / "sci.jsonl", "w") as fh:
        for i in range(150):
            fh.write(json.dumps({"text": f"The constant number {i} squared is {i * i}, a fact of arithmetic."}) + "\n")
    path = tmp_path / "mini.toml"
    path.write_text(PROFILE.format(tokens=tokens))
    prof = loads_profile(path.read_text(), str(path), path)
    return prof


def docs(path):
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_build_fills_quotas_dedups_and_splits(tmp_path):
    prof = make_profile(tmp_path)
    raw = tmp_path / "raw"
    seen = []
    summary = build_corpus(prof, raw, workers=2, progress=lambda d, done, total: seen.append((d, done, total)))
    quotas = domain_quotas(prof)
    assert set(quotas) == {"code", "science"}  # a zero weight switches chess off
    code = summary.domains["code"]
    assert code.chars + code.heldout_chars >= quotas["code"]
    train, held = docs(raw / "code.jsonl"), docs(raw / "heldout" / "code.jsonl")
    assert len(set(train)) == len(train) and not set(train) & set(held)
    assert held, "a 10% held-out split of ~300 docs is never empty"
    sci = summary.domains["science"]
    assert sci.shortfall_chars > 0  # 150 short docs cannot fill 20,000 chars
    assert any("sci-missing: no files match" in p for p in sci.problems)
    manifest = read_manifest(raw)
    assert manifest["domains"]["science"]["shortfall_chars"] == sci.shortfall_chars
    assert {d for d, *_ in seen} == {"code", "science"}
    assert not (raw / "chess.jsonl").exists()


def test_duplicates_are_counted(tmp_path):
    prof = make_profile(tmp_path, tokens=1_000_000)  # ask for more than there is: every file is read
    summary = build_corpus(prof, tmp_path / "raw", workers=1)
    assert summary.domains["code"].duplicates == 20
    assert summary.domains["code"].docs + summary.domains["code"].heldout_docs == 300


def test_build_is_deterministic(tmp_path):
    prof = make_profile(tmp_path)
    a = build_corpus(prof, tmp_path / "a", workers=2)
    b = build_corpus(prof, tmp_path / "b", workers=1)
    assert a.digest == b.digest
    assert (tmp_path / "a" / "code.jsonl").read_bytes() == (tmp_path / "b" / "code.jsonl").read_bytes()


def test_failed_build_leaves_previous_corpus_whole(tmp_path):
    prof = make_profile(tmp_path)
    raw = tmp_path / "raw"
    build_corpus(prof, raw, workers=1)
    before = (raw / "code.jsonl").read_bytes()
    prof.sources = [s for s in prof.sources if s.domain != "code"]
    with pytest.raises(DataError, match="mix.code: has a weight but no source"):
        build_corpus(prof, raw, workers=1)
    assert (raw / "code.jsonl").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")]


def test_few_large_documents_still_hold_out_their_share(tmp_path):
    prof = make_profile(tmp_path, tokens=1_000_000)
    (tmp_path / "code").mkdir(exist_ok=True)
    for p in (tmp_path / "code").iterdir():
        p.unlink()
    for i in range(20):
        (tmp_path / "code" / f"big{i}.txt").write_text(f"# module {i}\n" + "x = 1\n" * 800)
    summary = build_corpus(prof, tmp_path / "raw", workers=1).domains["code"]
    total = summary.chars + summary.heldout_chars
    assert summary.heldout_docs >= 2
    assert summary.heldout_chars >= 0.1 * total - 5000
