"""The fc450 profile builds from files in the formats its sources name (generated here): .jsonl.zst
records through a template, parquet (with a nested second source added), .pgn.zst games, webdataset
tars, chat messages; real data fills every domain, so the built-in fallbacks give nothing, and two
weighted sources of one domain split it within 2%."""

from __future__ import annotations

import io
import json
import random
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from engine.data.corpus import build_corpus
from tests.conftest import REPO

EXTRA = """
[[sources]]
name = "code-nested"
domain = "code"
format = "parquet"
path = "~/datasets/code/nested-*.parquet"
template = "# {file.path}\\n{file.content}"
where = { "meta.lang" = "python" }
weight = 3
"""


def zst(path, text: str) -> None:
    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))


def make_datasets(home) -> None:
    rng = random.Random(0)
    d = home / "datasets"
    for sub in ("arxiv", "code", "chess", "notebooks", "chat"):
        (d / sub).mkdir(parents=True)
    zst(d / "arxiv" / "part-0.jsonl.zst", "".join(
        json.dumps({"title": f"On lattice model {i}", "abstract": f"We study model {i} " * rng.randint(20, 60)}) + "\n"
        for i in range(3000)))
    pq.write_table(pa.table({"content": [f"def f{i}(x):\n    return x * {i}\n" * rng.randint(5, 20) for i in range(3000)]}),
                   d / "code" / "python-0.parquet", row_group_size=500)
    pq.write_table(pa.table({
        "file": [{"path": f"pkg/m{i}.py", "content": f"class C{i}:\n    value = {i}\n" * rng.randint(5, 20)} for i in range(6000)],
        "meta": [{"lang": "python" if i % 5 else "c"} for i in range(6000)],
    }), d / "code" / "nested-0.parquet", row_group_size=700)
    games = "".join(
        f'[Event "Rated Blitz game"]\n[Site "https://lichess.org/{i:08d}"]\n[White "w{i}"]\n[Black "b{i}"]\n'
        f'[Result "1-0"]\n[WhiteElo "{1700 + i % 600}"]\n[BlackElo "1900"]\n[TimeControl "300+3"]\n\n'
        f"1. e4 {{ [%clk 0:05:00] }} e5 2. Qh5 Nc6 3. Bc4 Nf6 4. Qxf7# 1-0\n\n" for i in range(6000))
    zst(d / "chess" / "lichess_2024-01.pgn.zst", games)
    with tarfile.open(d / "notebooks" / "shard-000.tar", "w") as tar:
        for i in range(3000):
            data = (f"# analysis {i}\n| x | y |\n| {i} | {i * i} |\n" + "mean of y is computed here. " * 10).encode()
            info = tarfile.TarInfo(f"{i:06d}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    zst(d / "chat" / "chat-0.jsonl.zst", "".join(
        json.dumps({"messages": [{"role": "user", "content": f"What is {i} squared?"},
                                 {"role": "assistant", "content": f"{i} squared is {i * i}. " * 3}]}) + "\n"
        for i in range(3000)))


def test_fc450_builds_from_real_formats_without_filler(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_datasets(tmp_path)
    text = (REPO / "profiles" / "fc450.toml").read_text().replace("target_tokens = 500_000_000", "target_tokens = 400_000")
    path = tmp_path / "fc450.toml"
    path.write_text(text + EXTRA)
    from engine.profile import load_profile

    prof = load_profile(path)
    summary = build_corpus(prof, tmp_path / "raw", workers=2)
    builtins = {s.name for s in prof.sources if s.builtin}
    for dom, d in summary.domains.items():
        assert d.shortfall_chars == 0, (dom, d.problems)
        assert not d.problems, d.problems
        assert all(d.source_chars.get(b, 0) == 0 for b in builtins), (dom, d.source_chars)
    code = summary.domains["code"].source_chars
    assert abs(code["code-nested"] / (code["code-nested"] + code["python-code"]) - 0.75) < 0.02
    chess = [json.loads(line)["text"] for line in (tmp_path / "raw" / "chess.jsonl").read_text().splitlines()]
    assert chess[0].startswith('[Event "Rated Blitz game"]') and "[%clk" not in chess[0]  # one game, comments dropped
    assert summary.domains["chess"].skipped.get("pgn: rating below min_elo", 0) > 0
    chat = (tmp_path / "raw" / "chat.jsonl").read_text()
    assert "<|user|>\\nWhat is" in chat and "<|assistant|>" in chat
