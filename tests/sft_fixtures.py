"""Fixtures for the SFT/LoRA tests: the trainer fixture workspace plus a `chat` shard of short
conversations, a small finished base run, and LoRA SFT runs made from it."""

from __future__ import annotations

import json
import random
from engine.compat import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.train_fixtures import TrainWorkspace, build_train_workspace, log_tail, make_run, train_here

LORA = dict(sft=True, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1, lora_targets=["q", "v", "o", "up", "down"],
            max_steps=12, checkpoint_every=3, eval_every=0, keep_checkpoints=2, lr=1e-2)


def chat_docs(rng: random.Random, n: int) -> list[str]:
    """Conversations in the chat template: a sum, a word's length."""
    from engine.data.chat_template import ASSISTANT, SYSTEM, USER, render

    out = []
    for _ in range(n):
        a, b = rng.randrange(2, 50), rng.randrange(2, 50)
        turns = [(SYSTEM, "Answer briefly.")] if rng.random() < 0.5 else []
        turns += [(USER, f"What is {a} plus {b}?"), (ASSISTANT, f"{a} plus {b} is {a + b}.")]
        if rng.random() < 0.4:
            turns += [(USER, "And twice that?"), (ASSISTANT, f"Twice {a + b} is {2 * (a + b)}.")]
        out.append(render(turns) + "\n")
    return out


@pytest.fixture(scope="module")
def sft_workspace(tmp_path_factory) -> TrainWorkspace:
    """The trainer fixture workspace with a `chat` shard (training and held-out) beside the others."""
    from engine.data.shards import write_shard
    from engine.data.tokenizer import Tokenizer

    tw = build_train_workspace(tmp_path_factory.mktemp("sftws") / "ws")
    tok = Tokenizer.load(tw.tokenizer_path)
    docs = chat_docs(random.Random(9), 120)
    tok_dir = tw.ws.tok_dir(tw.profile.name)
    for prefix, part in ((tok_dir / "chat", docs[10:]), (tok_dir / "heldout" / "chat", docs[:10])):
        write_shard(prefix, [tok.encode(t) for t in part], tok.vocab_size, tok.hash, tok.eos_id)
    return tw


@pytest.fixture(scope="module")
def base_run(sft_workspace) -> Path:
    run = make_run(sft_workspace, "short", max_steps=6, checkpoint_every=6, eval_every=0)
    assert train_here(run) == 0, log_tail(run)
    return run


def make_sft_run(tw: TrainWorkspace, base: Path, mix: dict[str, float] | None = None, **overrides: Any) -> Path:
    """A run of stage "short" turned into a LoRA SFT stage on `base`'s last checkpoint, over `mix`."""
    run = make_run(tw, "short", **{**LORA, **overrides})
    path = run / "stage.toml"
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    last = max((base / "ckpt").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    doc["paths"]["init_from"] = str(last)
    doc["stage"]["init_from"] = str(last)
    doc["mix"] = mix or {"chat": 0.8, "code": 0.2, "science": 0.0, "chess": 0.0}
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return run


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
