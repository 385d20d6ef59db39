"""Fixtures for the trainer tests: a tiny prepared workspace (real SentencePiece, real shards),
run folders with per-test stage overrides, and helpers to run `python -m engine.train` as a
real subprocess and read what it wrote.

The workspace is built once per test session: ~30 KB of text in three domains, a 400-piece
tokenizer, training and held-out shards. The model is 2 layers of width 32, so a step takes a
few milliseconds and the tests spend their time starting processes, not training.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import tomli_w

import engine

ENGINE_ROOT = Path(engine.__file__).parent.parent  # the tree whose `engine` the tests import
TRAIN_DOMAINS = ["code", "science", "chess"]
STDLIB = Path(json.__file__).parent.parent

_COMMON = """model = { dim = 32, n_layers = 2, n_heads = 2, n_kv_heads = 1, ffn_dim = 64, max_seq_len = 64 }
seq_len = 32
micro_batch = 4
grad_accum = 2
lr = 3e-3
warmup_steps = 4
device = "cpu"
precision = "fp32"
compile = "off"
eval_batches = 1
keep_checkpoints = 3
seed = 11
"""

PROFILE_TOML = f"""
[profile]
name = "trainfx"
seed = 3

[mix]
code = 0.5
science = 0.3
chess = 0.2

[tokenizer]
vocab_size = 400
sample_chars = 200000
threads = 1

[[stages]]
name = "short"
{_COMMON}max_steps = 40
checkpoint_every = 5
eval_every = 10

[[stages]]
name = "code-only"
{_COMMON}max_steps = 6
checkpoint_every = 3
eval_every = 0
[stages.mix]
code = 1.0

[[stages]]
name = "follow"
{_COMMON}init_from = "short"
max_steps = 6
checkpoint_every = 3
eval_every = 3
"""

_WORDS = (
    "energy mass field wave particle cell protein enzyme orbit planet star galaxy quantum spin "
    "electron photon gene species climate ocean carbon molecule atom reaction rate measure model "
    "theory data observe predict increase decrease pressure temperature volume density force"
).split()


def _science_docs(rng: random.Random, n: int) -> list[str]:
    docs = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(3, 7)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


def _chess_docs(rng: random.Random, n: int) -> list[str]:
    import chess

    docs = []
    for _ in range(n):
        board = chess.Board()
        moves = []
        for ply in range(rng.randint(20, 60)):
            legal = list(board.legal_moves)
            if not legal:
                break
            move = rng.choice(legal)
            san = board.san(move)
            moves.append(f"{ply // 2 + 1}. {san}" if ply % 2 == 0 else san)
            board.push(move)
        docs.append(" ".join(moves) + f" {board.result(claim_draw=True)}")
    return docs


def _code_docs(n: int) -> list[str]:
    files = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))
    docs = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        docs.extend(chunk for chunk in text.split("\n\n\n") if len(chunk) > 200)
        if len(docs) >= n:
            break
    return docs[:n]


@dataclass
class TrainWorkspace:
    """The session's prepared workspace and what tests compare against."""

    ws: Any
    profile: Any
    tokenizer_path: Path
    tokenizer_hash: str
    vocab_size: int


@pytest.fixture(scope="module")
def train_workspace(tmp_path_factory) -> TrainWorkspace:
    """A workspace with corpus, tokenizer and shards for TRAIN_DOMAINS, built once per test module:
    the tests of a module add runs to it, those of another must not see them."""
    return build_train_workspace(tmp_path_factory.mktemp("trainws") / "ws")


def build_train_workspace(root: Path) -> TrainWorkspace:
    """Corpus, a real SentencePiece tokenizer and real shards (training and held-out) in `root`."""
    from engine.profile import loads_profile
    from engine.data.shards import write_shard
    from engine.data.tokenizer import Tokenizer, train_tokenizer
    from engine.workspace import Workspace

    ws = Workspace(root)
    ws.init()
    path = ws.profiles_dir / "trainfx.toml"
    path.write_text(PROFILE_TOML, encoding="utf-8")
    prof = loads_profile(PROFILE_TOML, str(path), path)
    rng = random.Random(5)
    corpus = {"code": _code_docs(40), "science": _science_docs(rng, 60), "chess": _chess_docs(rng, 40)}
    raw = ws.raw_dir(prof.name)
    (raw / "heldout").mkdir(parents=True)
    for domain, docs in corpus.items():
        cut = max(len(docs) // 8, 2)
        for sub, part in (("", docs[cut:]), ("heldout/", docs[:cut])):
            lines = "".join(json.dumps({"text": t, "source": "fixture"}) + "\n" for t in part)
            (raw / f"{sub}{domain}.jsonl").write_text(lines, encoding="utf-8")
    tok_path = ws.tokenizer_path(prof.tokenizer_name)
    train_tokenizer(raw, tok_path, TRAIN_DOMAINS, vocab_size=400, sample_chars=200_000, threads=1, character_coverage=0.995,
                    user_symbols=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<image>"))
    tok = Tokenizer.load(tok_path)
    tok_dir = ws.tok_dir(prof.name)
    for domain, docs in corpus.items():
        cut = max(len(docs) // 8, 2)
        for prefix, part in ((tok_dir / domain, docs[cut:]), (tok_dir / "heldout" / domain, docs[:cut])):
            prefix.parent.mkdir(parents=True, exist_ok=True)
            write_shard(prefix, [tok.encode(t) for t in part], tok.vocab_size, tok.hash, tok.eos_id)
    return TrainWorkspace(ws=ws, profile=prof, tokenizer_path=tok_path, tokenizer_hash=tok.hash,
                          vocab_size=tok.vocab_size)


# -- runs ---------------------------------------------------------------------------------------

def make_run(tw: TrainWorkspace, stage: str = "short", **overrides: Any) -> Path:
    """create_run for a stage of the fixture profile, then `overrides` written into [stage]."""
    from engine.jobs.runs import create_run

    run_dir = create_run(tw.ws, tw.profile, stage)
    if overrides:
        path = run_dir / "stage.toml"
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        doc["stage"].update(overrides)
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return run_dir


def finish_run_by_hand(run_dir: Path, steps: tuple[int, ...], state: str = "finished", tokenizer_hash: str = "") -> None:
    """Give a run checkpoint folders and a final status without training (for run-listing tests)."""
    from engine.jobs.events import EventWriter

    for step in steps:
        ckpt = run_dir / "ckpt" / f"step-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text(json.dumps({"step": step, "tokenizer_hash": tokenizer_hash}))
    with EventWriter(run_dir / "events.jsonl") as w:
        w.write("status", state="running", step=0, max_steps=steps[-1], pid=1, device="cpu")
        w.write("status", state=state, step=steps[-1], max_steps=steps[-1], pid=1, device="cpu")


# -- the trainer as a subprocess ---------------------------------------------------------------

def trainer_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ENGINE_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["FCWORK_TRAIN_THREADS"] = "1"
    env.update(extra)
    return env


def start_trainer(run_dir: Path, **env: str) -> subprocess.Popen:
    """`python -m engine.train RUN_DIR` in its own session, output to RUN_DIR/trainer.log."""
    with open(run_dir / "trainer.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.train", str(run_dir)], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=run_dir, env=trainer_env(**env),
        )


def run_trainer(run_dir: Path, timeout: float = 120, **env: str) -> int:
    """Run `python -m engine.train RUN_DIR` to its end; returns its exit code."""
    proc = start_trainer(run_dir, **env)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise


def train_here(run_dir: Path, **env: str) -> int:
    """Run the trainer in this process: the same code as `python -m engine.train` (whose exit code
    it returns) without the ~4 s that starting torch in a fresh process costs."""
    from engine.train.trainer import main

    env = {"FCWORK_TRAIN_THREADS": "1", **env}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return main(run_dir)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the trainer's whole session (it is its group leader) and reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def events_of(run_dir: Path, kind: str | None = None) -> list[dict]:
    from engine.jobs.events import read_events

    events, _ = read_events(run_dir / "events.jsonl")
    return [e for e in events if kind is None or e["type"] == kind]


def step_losses(run_dir: Path) -> dict[int, float]:
    """Loss per step from the step events; a resumed run re-emits steps, the last value counts."""
    return {e["step"]: e["loss"] for e in events_of(run_dir, "step")}


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def log_tail(run_dir: Path, n: int = 30) -> str:
    path = run_dir / "trainer.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no trainer.log)"
