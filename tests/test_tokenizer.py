"""Tokenizer: real SentencePiece training, byte-exact round trips for code, specials, the report and hash."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import TokenizerError
from engine.data.tokenizer import EOS_ID, Tokenizer, balanced_sample, file_hash, train_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    raw = root / "raw"
    (raw / "heldout").mkdir(parents=True)
    code = [p.read_text(encoding="utf-8") for p in sorted(STDLIB.glob("*.py"))[:120]]
    prose = [f"Experiment {i}: the measured mean was {i * 3.7:.2f} units, about {i}% above baseline." for i in range(3000)]
    for name, docs in (("code", code), ("science", prose)):
        with open(raw / f"{name}.jsonl", "w") as fh:
            for d in docs:
                fh.write(json.dumps({"text": d, "source": "t"}) + "\n")
    with open(raw / "heldout" / "code.jsonl", "w") as fh:
        fh.write(json.dumps({"text": (STDLIB / "textwrap.py").read_text(), "source": "t"}) + "\n")
    out = root / "t.model"
    report = train_tokenizer(raw, out, ["code", "science"], 2000, sample_chars=600_000,
                             user_symbols=["<|user|>", "<|assistant|>", "<image>"], seed=3)
    return out, report, raw


def test_report_and_hash(trained):
    path, report, _ = trained
    tok = Tokenizer.load(path)
    assert report.hash == file_hash(path) == tok.hash
    assert report.vocab_size == tok.vocab_size == 2000
    assert set(report.tokens_per_char) == {"code", "science"}
    assert all(0.05 < v < 1.0 for v in report.tokens_per_char.values())
    assert json.loads(path.with_suffix(".json").read_text())["hash"] == report.hash
    assert len(path.with_suffix(".vocab").read_text().splitlines()) == 2000
    assert (tok.bos_id, tok.eos_id) == (1, EOS_ID)


@pytest.mark.parametrize("name", ["json/decoder.py", "textwrap.py", "tabnanny.py", "difflib.py"])
def test_python_files_survive_byte_for_byte(trained, name):
    tok = Tokenizer.load(trained[0])
    src = (STDLIB / name).read_text(encoding="utf-8")
    assert tok.decode(tok.encode(src)).encode() == src.encode()


def test_specials_digits_and_indentation(trained):
    tok = Tokenizer.load(trained[0])
    pieces = tok.pieces("<|user|> 2024 <image>\n        return x")
    assert "<|user|>" in pieces and "<image>" in pieces
    assert {"2", "0", "4"} <= set(pieces) and "2024" not in pieces
    assert any(set(p) == {"\u2581"} and len(p) >= 4 for p in pieces), pieces


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\u2581", blacklist_categories=("Cs",)), max_size=200))
def test_any_text_round_trips(trained, text):
    tok = Tokenizer.load(trained[0])
    assert tok.decode(tok.encode(text)) == text


def test_balanced_sample_gives_each_domain_an_equal_share(trained):
    raw = trained[2]
    sample = balanced_sample(raw, ["code", "science"], 200_000, seed=1)
    sizes = {d: sum(map(len, docs)) for d, docs in sample.items()}
    assert abs(sizes["code"] - sizes["science"]) < 10_000
    assert balanced_sample(raw, ["code", "science"], 200_000, seed=1) == sample


def test_errors_are_one_line(tmp_path):
    with pytest.raises(TokenizerError, match="missing corpus file"):
        train_tokenizer(tmp_path, tmp_path / "x.model", ["code"], 500)
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        Tokenizer.load(tmp_path / "junk.model")
    with pytest.raises(TokenizerError, match="no such tokenizer file"):
        Tokenizer.load(tmp_path / "none.model")


def test_balanced_sample_streams_in_memory_bounded_by_the_sample(tmp_path):
    import json
    import tracemalloc

    raw = tmp_path / "raw"
    raw.mkdir()
    for d, n in (("big", 60_000), ("small", 300)):
        with open(raw / f"{d}.jsonl", "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"text": f"{d} document {i}: " + "lorem ipsum dolor " * 25}) + "\n")
    big_chars = 60_000 * len("big document 0: " + "lorem ipsum dolor " * 25)
    tracemalloc.start()
    sample = balanced_sample(raw, ["big", "small"], 400_000, seed=3, sizes={"big": big_chars})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3_000_000, f"peak {peak:,} bytes for a {big_chars:,}-char domain"  # ~4x the sample, not the domain
    small = sum(map(len, sample["small"]))
    got = sum(map(len, sample["big"]))
    assert 400_000 - small - 2000 <= got <= 400_000 - small + 4000  # the small domain's leftover goes to big
    indices = [int(t.split()[2].rstrip(":")) for t in sample["big"]]
    assert max(indices) > 50_000 and min(indices) < 5_000  # drawn from the whole file, not a prefix
