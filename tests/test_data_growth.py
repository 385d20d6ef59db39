"""The corpus is what [data] and [[sources]] say, never the mix: per-source weights and fallbacks,
growth by appending (corpus and shards), and a mix edit that leaves corpus, tokenizer, shards and
earlier runs as they were."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from engine.data.corpus import build_corpus, plan_build, read_manifest
from engine.data.pipeline import prepare_data, shard_plan
from engine.data.shards import open_shard
from engine.data.tokenizer import file_hash
from engine.profile import loads_profile, save_mix
from engine.workspace import Workspace
from tests.queue_fixtures import needs_trainer

PROFILE = """
[profile]
name = "w"
seed = 3
[mix]
science = 0.7
chess = 0.0
[data]
target_tokens = {tokens}
heldout_fraction = 0.05
chars_per_token = 4.0
min_doc_chars = 5
shares = {{ science = 1.0 }}
[tokenizer]
vocab_size = 400
sample_chars = 100000
threads = 1
[[sources]]
name = "big"
domain = "science"
format = "jsonl"
path = "big/*.jsonl"
weight = 3
[[sources]]
name = "small"
domain = "science"
format = "jsonl"
path = "small.jsonl"
weight = 1
[[sources]]
name = "filler"
domain = "science"
format = "builtin:science-docs"
fallback = true
"""


def write_sources(root: Path, big: int = 4000, small: int = 2000) -> None:
    (root / "big").mkdir(exist_ok=True)
    for part in range(4):
        with open(root / "big" / f"{part}.jsonl", "w") as fh:
            for i in range(part, big, 4):
                fh.write(json.dumps({"text": f"Big source document {i}: the {i}th energy level is {i * 1.5:.2f} eV."}) + "\n")
    with open(root / "small.jsonl", "w") as fh:
        for i in range(small):
            fh.write(json.dumps({"text": f"Small source note {i}, a different sentence with {i % 17} parts."}) + "\n")


def profile(root: Path, tokens: int, text: str = PROFILE):
    path = root / "w.toml"
    path.write_text(text.format(tokens=tokens))
    return loads_profile(path.read_text(), str(path), path)


def texts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_weights_hold_within_two_percent_and_fallback_stays_unused(tmp_path):
    write_sources(tmp_path)
    summary = build_corpus(profile(tmp_path, 40_000), tmp_path / "raw", workers=1)
    sci = summary.domains["science"]
    total = sci.source_chars["big"] + sci.source_chars["small"]
    assert total >= 160_000
    assert abs(sci.source_chars["big"] / total - 0.75) < 0.02
    assert sci.source_chars["filler"] == 0 and "filler" not in sci.sources  # real data sufficed
    assert "chess" not in summary.domains  # no share and no weight: no corpus


def test_fallback_fills_only_what_the_others_cannot(tmp_path):
    write_sources(tmp_path, big=200, small=100)
    summary = build_corpus(profile(tmp_path, 60_000), tmp_path / "raw", workers=1)
    sci = summary.domains["science"]
    assert sci.sources["big"] == 200 and sci.sources["small"] == 100  # every real document first
    assert sci.source_chars["filler"] > 0 and sci.shortfall_chars == 0
    docs = texts(tmp_path / "raw" / "science.jsonl") + texts(tmp_path / "raw" / "heldout" / "science.jsonl")
    first_filler = next(i for i, d in enumerate(docs) if d["source"] == "filler")
    assert all(d["source"] == "filler" for d in docs[first_filler:] if d in texts(tmp_path / "raw" / "science.jsonl"))


def test_growing_appends_without_rereading_and_keeps_heldout(tmp_path):
    write_sources(tmp_path, big=6000, small=3000)
    raw = tmp_path / "raw"
    build_corpus(profile(tmp_path, 20_000), raw, workers=1)
    before = read_manifest(raw)["domains"]["science"]
    train0, held0 = (raw / "science.jsonl").read_bytes(), (raw / "heldout" / "science.jsonl").read_bytes()
    cursors = before["cursors"]
    # Files the first build read to the end are gone: growing must not need them again.
    for gone in cursors["big"]["done"]:
        os.unlink(gone)
    assert plan_build(profile(tmp_path, 40_000), raw) == {"science": "grow"}
    grown = build_corpus(profile(tmp_path, 40_000), raw, workers=1)
    assert grown.actions == {"science": "grown"}
    assert not grown.domains["science"].problems
    train1 = (raw / "science.jsonl").read_bytes()
    assert train1.startswith(train0) and len(train1) > len(train0)
    assert (raw / "heldout" / "science.jsonl").read_bytes() == held0
    sci = grown.domains["science"]
    assert sci.build_id == before["build_id"] and sci.chars + sci.heldout_chars >= 40_000 * 4
    assert abs(sci.source_chars["big"] / (sci.source_chars["big"] + sci.source_chars["small"]) - 0.75) < 0.02
    # The same documents as one build at the larger budget (from a full copy of the sources).
    fresh_root = tmp_path / "fresh"
    fresh_root.mkdir()
    write_sources(fresh_root, big=6000, small=3000)
    build_corpus(profile(fresh_root, 40_000), fresh_root / "raw", workers=1)
    ours = {d["text"] for p in (raw / "science.jsonl", raw / "heldout" / "science.jsonl") for d in texts(p)}
    theirs = {d["text"] for p in (fresh_root / "raw" / "science.jsonl", fresh_root / "raw" / "heldout" / "science.jsonl")
              for d in texts(p)}
    assert ours == theirs
    assert plan_build(profile(tmp_path, 40_000), raw) == {"science": "keep"}


def test_a_crashed_append_is_cut_back_to_the_manifest(tmp_path):
    write_sources(tmp_path)
    raw = tmp_path / "raw"
    build_corpus(profile(tmp_path, 10_000), raw, workers=1)
    committed = (raw / "science.jsonl").read_bytes()
    with open(raw / "science.jsonl", "ab") as fh:
        fh.write(b'{"text": "half a line')
    build_corpus(profile(tmp_path, 12_000), raw, workers=1)
    data = (raw / "science.jsonl").read_bytes()
    assert data.startswith(committed) and b"half a line" not in data
    assert all(json.loads(line) for line in data.splitlines())


def workspace_with(tmp_path, tokens: int):
    ws = Workspace(tmp_path / "ws")
    ws.init()
    write_sources(ws.profiles_dir)
    two_domains = PROFILE.replace("chess = 0.0", "chess = 0.3").replace(
        "shares = {{ science = 1.0 }}", "shares = {{ science = 0.8, chess = 0.2 }}") + \
        '[[sources]]\nname = "games"\ndomain = "chess"\nformat = "builtin:chess-games"\n'
    (ws.profiles_dir / "w.toml").write_text(two_domains.format(tokens=tokens))
    return ws


def test_mix_edit_rebuilds_nothing_and_growth_appends_to_shards(tmp_path):
    ws = workspace_with(tmp_path, 10_000)
    prof = ws.load_profile("w")
    assert prepare_data(ws, prof) == ["corpus", "tokenizer", "shards"]
    tok_hash = file_hash(ws.tokenizer_path("w"))
    stamp = (ws.tok_dir("w") / "stamp.json").read_bytes()
    shard0 = open_shard(ws.tok_dir("w") / "science", expected_hash=tok_hash)
    old_tokens = np.array(shard0.tokens)
    # A saved mix change: nothing is rebuilt, retrained or re-encoded.
    prof = save_mix(prof.path, {"science": 0.2, "chess": 0.8})
    assert prepare_data(ws, prof) == []
    assert file_hash(ws.tokenizer_path("w")) == tok_hash
    assert (ws.tok_dir("w") / "stamp.json").read_bytes() == stamp
    # A larger budget grows the corpus and appends to the shards; the tokenizer stays.
    (ws.profiles_dir / "w.toml").write_text((ws.profiles_dir / "w.toml").read_text().replace(
        "target_tokens = 10000", "target_tokens = 20000"))
    prof = ws.load_profile("w")
    assert shard_plan(ws, prof)["science"]["mode"] == "keep"
    assert prepare_data(ws, prof) == ["corpus", "shards"]
    assert file_hash(ws.tokenizer_path("w")) == tok_hash
    grown = open_shard(ws.tok_dir("w") / "science", expected_hash=tok_hash)
    assert grown.n_tokens > shard0.n_tokens and np.array_equal(np.array(grown.tokens[: shard0.n_tokens]), old_tokens)
    # The appended shard equals encoding the grown corpus from scratch.
    from engine.data.pipeline import pretokenize_profile

    pretokenize_profile(ws, prof, force=True)
    again = open_shard(ws.tok_dir("w") / "science", expected_hash=tok_hash)
    assert np.array_equal(np.array(again.tokens), np.array(grown.tokens))
    assert np.array_equal(again.doc_starts, grown.doc_starts)


@needs_trainer
def test_saved_mix_change_keeps_an_old_run_resumable(tiny_ws):
    from engine.jobs.rundir import RunDir
    from engine.jobs.runs import create_run
    from tests.train_fixtures import events_of, log_tail, start_trainer, train_here, wait_for

    ws = tiny_ws
    prof = ws.load_profile("tiny")
    first = create_run(ws, prof, "first")
    # In this process where a subprocess adds nothing but a torch start-up; the stop needs one.
    assert train_here(first) == 0, log_tail(first)
    run = create_run(ws, prof, "medium")
    proc = start_trainer(run)
    wait_for(lambda: list((run / "ckpt").glob("step-*")), 120, "a checkpoint")
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log_tail(run)
    tok_hash = RunDir(run).spec().tokenizer_hash

    prof = save_mix(prof.path, {"code": 0.1, "science": 0.9})  # what the Manifest pane's save does
    assert prepare_data(ws, prof) == []  # `fcwork run` / `data prepare`: nothing to redo
    assert file_hash(ws.tokenizer_path("tiny")) == tok_hash

    assert train_here(run) == 0, log_tail(run)
    assert events_of(run, "status")[-1]["state"] == "finished"
    assert not events_of(run, "error")
    second = create_run(ws, prof, "second")  # init_from = "first": the run from before the edit
    spec = RunDir(second).spec()
    assert spec.tokenizer_hash == tok_hash and spec.init_from is not None and first in spec.init_from.parents
    assert train_here(second) == 0, log_tail(second)


def test_shards_renamed_before_a_crash_are_encoded_again_not_appended_twice(tmp_path):
    ws = workspace_with(tmp_path, 10_000)
    prof = ws.load_profile("w")
    prepare_data(ws, prof)
    stamp = (ws.tok_dir("w") / "stamp.json").read_text()
    (ws.profiles_dir / "w.toml").write_text((ws.profiles_dir / "w.toml").read_text().replace(
        "target_tokens = 10000", "target_tokens = 20000"))
    prof = ws.load_profile("w")
    prepare_data(ws, prof)
    grown = open_shard(ws.tok_dir("w") / "science").n_tokens
    (ws.tok_dir("w") / "stamp.json").write_text(stamp)  # as if killed after the rename, before the stamp
    assert shard_plan(ws, prof)["science"]["mode"] == "full"
    assert prepare_data(ws, prof) == ["shards"]
    assert open_shard(ws.tok_dir("w") / "science").n_tokens == grown


@pytest.mark.parametrize("edit, message", [
    ("shares = {{ science = 1.0 }}", None),
    ("shares = {{ nope = 1.0 }}", "data.shares.nope: expected a domain of [mix] (science, chess)"),
    ("shares = {{ science = -1.0 }}", "data.shares.science: expected a non-negative number, got -1.0"),
    ("shares = {{ science = 0.0 }}", "data.shares: expected at least one positive share, got all zero"),
    ("shares = {{ science = 1.0 }}\nwarn_epochs = 0", "data.warn_epochs: expected a positive number, got 0"),
])
def test_data_settings_errors_name_key_and_value(tmp_path, edit, message):
    from engine.errors import ProfileError

    text = PROFILE.replace("shares = {{ science = 1.0 }}", edit)
    if message is None:
        profile(tmp_path, 1000, text)
        return
    with pytest.raises(ProfileError) as err:
        profile(tmp_path, 1000, text)
    assert str(err.value) == f"{tmp_path / 'w.toml'}: {message}"
