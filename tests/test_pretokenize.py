"""Pretokenization with a real SentencePiece model: shards decode back to the corpus, the pool's
output equals the in-process output, and bad inputs get one-line errors."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from engine.errors import DataError
from engine.data.pretokenize import pretokenize
from engine.data.shards import HEADER_SIZE, open_shard
from engine.data.tokenizer import Tokenizer, file_hash, train_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])
DOMAINS = ["code", "science"]


def _write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t, "source": "test"}) + "\n")


def _corpus() -> dict[str, dict[str, list[str]]]:
    code = [p.read_text(encoding="utf-8")[:1500] for p in sorted(STDLIB.glob("*.py"))[:40]]
    prose = [
        f"Trial {i}: the sample at {20 + i % 7} °C gave {i * 1.37:.3f} mg/L; naïve fit χ² = {i % 11}. 中文 {i} 🙂"
        for i in range(120)
    ]
    return {
        "code": {"train": code[:34], "heldout": code[34:]},
        "science": {"train": prose[:100] + ["", "   "], "heldout": prose[100:]},
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A raw corpus folder (train + held-out per domain) and a small tokenizer trained on it."""
    root = tmp_path_factory.mktemp("pretok")
    raw = root / "raw"
    corpus = _corpus()
    for d, splits in corpus.items():
        _write_jsonl(raw / f"{d}.jsonl", splits["train"])
        _write_jsonl(raw / "heldout" / f"{d}.jsonl", splits["heldout"])
    model = root / "tok.model"
    train_tokenizer(raw, model, DOMAINS, vocab_size=600, sample_chars=80_000, seed=1)
    return root, raw, model, corpus


def _shard_arrays(tok_dir: Path) -> dict[str, tuple]:
    out = {}
    for d in DOMAINS:
        for sub in ("", "heldout/"):
            s = open_shard(tok_dir / f"{sub}{d}")
            header = (tok_dir / f"{sub}{d}.bin").read_bytes()[:HEADER_SIZE]
            out[sub + d] = (s.tokens.tolist(), s.doc_starts.tolist(), header[:24] + header[32:])  # all but the pair id
    return out


def test_shards_decode_back_to_the_corpus(setup):
    root, raw, model, corpus = setup
    tok = Tokenizer.load(model)
    calls = []
    result = pretokenize(raw, root / "tok1", model, DOMAINS, workers=1, progress=lambda *a: calls.append(a))
    for d in DOMAINS:
        for split, sub in (("train", ""), ("heldout", "heldout/")):
            shard = open_shard(root / "tok1" / f"{sub}{d}", expected_hash=file_hash(model), expected_vocab=tok.vocab_size)
            assert shard.n_docs == len(corpus[d][split])  # empty and blank texts are documents too
            for k, text in enumerate(corpus[d][split]):
                assert tok.decode(shard.doc(k).tolist()) == text
                assert shard.tokens[int(shard.doc_starts[k + 1]) - 1] == tok.eos_id
        info = result[d]
        assert info["docs"] == len(corpus[d]["train"]) and info["heldout_docs"] == len(corpus[d]["heldout"])
        assert info["tokens"] == open_shard(root / "tok1" / d).n_tokens
        assert info["chars"] == sum(map(len, corpus[d]["train"]))
        assert 1.0 < info["chars_per_token"] < 8.0
    last = {d: max((c for c in calls if c[0] == d), key=lambda c: c[1]) for d in DOMAINS}
    assert all(done == total > 0 for _, done, total in last.values())


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_pool_output_equals_in_process_output(setup, start_method):
    root, raw, model, _ = setup
    one = pretokenize(raw, root / f"one-{start_method}", model, DOMAINS, workers=1, chunk_bytes=3000)
    two = pretokenize(raw, root / f"two-{start_method}", model, DOMAINS, workers=2, chunk_bytes=3000,
                      start_method=start_method)
    assert _shard_arrays(root / f"one-{start_method}") == _shard_arrays(root / f"two-{start_method}")
    strip = lambda r: {d: {k: v for k, v in info.items() if k not in ("path", "seconds")} for d, info in r.items()}
    assert strip(one) == strip(two)


def test_default_chunking_matches_small_chunks(setup):
    """A small corpus with default chunks is encoded in-process; many small chunks give the same shards."""
    root, raw, model, _ = setup
    pretokenize(raw, root / "big", model, DOMAINS, workers=2)
    pretokenize(raw, root / "small", model, DOMAINS, workers=1, chunk_bytes=700)
    assert _shard_arrays(root / "big") == _shard_arrays(root / "small")


def test_missing_raw_file(setup, tmp_path):
    _, raw, model, _ = setup
    with pytest.raises(DataError) as err:
        pretokenize(raw, tmp_path / "tok", model, ["code", "chess"])
    msg = str(err.value)
    assert msg.startswith(str(raw / "chess.jsonl")) and "fcwork data build" in msg and "\n" not in msg
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "bad_line, reason",
    [("{not json", "not valid JSON"), ('{"txt": "x"}', 'expected an object with a "text" string'), ("[1, 2]", "expected an object")],
)
def test_bad_line_is_named(setup, tmp_path, workers, bad_line, reason):
    _, _, model, _ = setup
    raw = tmp_path / "raw"
    lines = [json.dumps({"text": f"line {i} " * 20, "source": "t"}) for i in range(60)]
    lines.insert(41, bad_line)
    (raw / "heldout").mkdir(parents=True)
    (raw / "code.jsonl").write_text("\n".join(lines) + "\n")
    (raw / "heldout" / "code.jsonl").write_text("")
    with pytest.raises(DataError) as err:
        pretokenize(raw, tmp_path / "tok", model, ["code"], workers=workers, chunk_bytes=1000, start_method="fork")
    assert str(err.value).startswith(f"{raw / 'code.jsonl'}: line 42: {reason}")
    assert not list((tmp_path / "tok").glob("**/*.bin"))


def test_empty_heldout_gives_empty_shard(setup, tmp_path):
    _, _, model, _ = setup
    raw = tmp_path / "raw"
    _write_jsonl(raw / "code.jsonl", ["def f():\n    return 1\n"])
    _write_jsonl(raw / "heldout" / "code.jsonl", [])
    result = pretokenize(raw, tmp_path / "tok", model, ["code"], workers=2)
    assert result["code"]["heldout_docs"] == 0 and open_shard(tmp_path / "tok" / "heldout" / "code").n_tokens == 0
    assert result["code"]["docs"] == 1


def test_worker_count_must_be_positive(setup, tmp_path):
    _, raw, model, _ = setup
    with pytest.raises(DataError, match="workers 0"):
        pretokenize(raw, tmp_path / "tok", model, DOMAINS, workers=0)
