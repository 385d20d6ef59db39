"""Passes over each domain per stage: computed by the engine from shards, corpus or plan, shown by
`fcwork queue add`, with a warning past data.warn_epochs."""

from __future__ import annotations

import pytest

from engine.data.epochs import epoch_warnings, running_epochs, stage_passes, stage_tokens
from engine.data.shards import shard_counts
from tests.queue_fixtures import fcwork, needs_trainer


def test_passes_from_the_plan_before_any_build(workspace):
    prof = workspace.load_profile("default")
    st = prof.stage("base")
    rows = {r.domain: r for r in stage_passes(workspace, prof, "base")}
    total = stage_tokens(st)
    assert total == 160 * 16 * 256
    science = rows["science"]
    assert science.basis == "plan" and science.share == pytest.approx(0.3)
    held = prof.data.heldout_fraction
    corpus_share = prof.data.shares["science"] / sum(prof.data.shares.values())  # of the corpus, not the mix
    want = int(1_500_000 * 3.6 * corpus_share * (1 - held) / 3.6)
    assert science.domain_tokens == pytest.approx(want, abs=2)
    assert science.passes == pytest.approx(int(total * 0.3) / science.domain_tokens)
    anneal = {r.domain: r.share for r in stage_passes(workspace, prof, "anneal")}
    assert anneal["data"] == pytest.approx(0.25)  # a stage's own mix decides its shares


def test_running_epochs():
    assert running_epochs({"a": 50, "b": 10}, {"a": 100, "b": 0}) == {"a": 0.5, "b": 0.0}


@needs_trainer
def test_passes_from_shards_and_the_queue_add_warning(tiny_ws):
    prof = tiny_ws.load_profile("tiny")
    rows = {r.domain: r for r in stage_passes(tiny_ws, prof, "long")}
    code_tokens = shard_counts(tiny_ws.tok_dir("tiny") / "code")[0]
    assert rows["code"].basis == "shards" and rows["code"].domain_tokens == code_tokens
    warnings = epoch_warnings(prof, "long", list(rows.values()))
    assert len(warnings) == 2 and "passes over code" in warnings[0] and "data.warn_epochs = 4" in warnings[0]
    assert not epoch_warnings(prof, "first", stage_passes(tiny_ws, prof, "first"))

    r = fcwork(tiny_ws.root, "queue", "add", "tiny", "first", "long")
    assert r.returncode == 0, r.stderr
    assert "passes over each domain (2,048 tokens; domain tokens from shards): code 0.1x" in " ".join(r.stdout.split())
    lines = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2 and "stage long: passes over code" in lines[0]
