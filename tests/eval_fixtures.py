"""Fixtures for the eval, export and generation tests: a real workspace with real SentencePiece,
real shards and run folders in the trainer's layout, holding randomly initialised tiny models.

Built once per test session from the built-in sources (chess PGN, data notebooks, stdlib code,
science docs, chat): ~200 KB of text, a 600-piece tokenizer, training and held-out shards, and
runs made by `engine.jobs.runs.create_run` with a checkpoint `ckpt/step-<N>/` (model.safetensors +
state.json) written the way the trainer writes it. Weights are drawn with a large spread so
attention is sharp and a wrong Q/K layout changes the logits a lot.
"""

from __future__ import annotations

import json
import shutil
from engine.compat import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

DOMAINS = {"code": "python-stdlib", "science": "science-docs", "chess": "chess-games", "data": "data-notebooks",
           "chat": "chat"}
CHARS = {"code": 60_000, "science": 40_000, "chess": 30_000, "data": 40_000, "chat": 20_000}
HELDOUT_DOCS = {"code": 3, "science": 8, "chess": 8, "data": 6, "chat": 4}
VOCAB = 600
MODEL = "{ dim = 64, n_layers = 2, n_heads = 4, n_kv_heads = 2, ffn_dim = 128, max_seq_len = 256%s }"
STEP = 20

PROFILE_TOML = f"""
[profile]
name = "evalfx"
seed = 2

[mix]
code = 0.3
science = 0.3
chess = 0.15
data = 0.15
chat = 0.1

[tokenizer]
vocab_size = {VOCAB}
sample_chars = 200000
threads = 1

[[stages]]
name = "base"
model = {MODEL % ""}
seq_len = 64
micro_batch = 2
max_steps = {STEP}
warmup_steps = 2
device = "cpu"

[[stages]]
name = "tied"
model = {MODEL % ", tie_embeddings = true"}
seq_len = 64
micro_batch = 2
max_steps = {STEP}
warmup_steps = 2
device = "cpu"
"""


@dataclass
class EvalWorkspace:
    """The session's workspace, its tokenizer and two runs with a checkpoint each."""

    ws: object
    tokenizer_path: Path
    run: Path       # untied lm head
    tied_run: Path  # lm head tied to the embedding


def _corpus() -> dict[str, list[str]]:
    from engine.data.builtin import iter_builtin

    return {d: list(iter_builtin(src, 3, CHARS[d])) for d, src in DOMAINS.items()}


def write_checkpoint(run_dir: Path, step: int = STEP, seed: int = 0, extra: dict | None = None) -> Path:
    """A random model of the run's shape saved as ckpt/step-<step>/ (model.safetensors + state.json)."""
    import torch
    from safetensors.torch import save_file

    from engine.model.decoder import Transformer
    from engine.jobs.rundir import RunDir

    spec = RunDir(run_dir).spec()
    torch.manual_seed(seed)
    model = Transformer(spec.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.3 * torch.randn_like(p))
            elif "q_proj" in name or "k_proj" in name:
                p.mul_(8.0)
            else:
                p.mul_(3.0)
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.untyped_storage().data_ptr() in seen:
            continue  # the tied head is saved once, as the embedding (as the trainer does)
        seen.add(t.untyped_storage().data_ptr())
        tensors[name] = t.contiguous()
    tensors.update(extra or {})
    ckpt = run_dir / "ckpt" / f"step-{step}"
    ckpt.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"step": str(step)})
    (ckpt / "state.json").write_text(json.dumps({"step": step, "tokenizer_hash": spec.tokenizer_hash}))
    return ckpt


@pytest.fixture(scope="module")
def eval_workspace(tmp_path_factory) -> EvalWorkspace:
    """A workspace with a corpus, tokenizer, shards and two runs with checkpoints, built once per
    test module: the tests of a module add runs and exports to it, those of another must not see them."""
    from engine.profile import loads_profile
    from engine.jobs.runs import create_run
    from engine.data.shards import write_shard
    from engine.data.tokenizer import Tokenizer, train_tokenizer
    from engine.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("evalws") / "ws")
    ws.init()
    path = ws.profiles_dir / "evalfx.toml"
    path.write_text(PROFILE_TOML, encoding="utf-8")
    prof = loads_profile(PROFILE_TOML, str(path), path)
    raw = ws.raw_dir(prof.name)
    (raw / "heldout").mkdir(parents=True)
    corpus = _corpus()
    splits = {d: (docs[HELDOUT_DOCS[d]:], docs[:HELDOUT_DOCS[d]]) for d, docs in corpus.items()}
    for d, (train, held) in splits.items():
        for sub, part in (("", train), ("heldout/", held)):
            lines = "".join(json.dumps({"text": t, "source": DOMAINS[d]}) + "\n" for t in part)
            (raw / f"{sub}{d}.jsonl").write_text(lines, encoding="utf-8")
    tok_path = ws.tokenizer_path(prof.tokenizer_name)
    train_tokenizer(raw, tok_path, list(DOMAINS), vocab_size=VOCAB, sample_chars=200_000, threads=1,
                    user_symbols=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<image>"))
    tok = Tokenizer.load(tok_path)
    tok_dir = ws.tok_dir(prof.name)
    for d, (train, held) in splits.items():
        for prefix, part in ((tok_dir / d, train), (tok_dir / "heldout" / d, held)):
            prefix.parent.mkdir(parents=True, exist_ok=True)
            write_shard(prefix, [tok.encode(t) for t in part], tok.vocab_size, tok.hash, tok.eos_id)
    run = create_run(ws, prof, "base")
    write_checkpoint(run, STEP - 10, seed=1)
    write_checkpoint(run, STEP, seed=0)
    tied = create_run(ws, prof, "tied")
    write_checkpoint(tied, STEP, seed=2)
    return EvalWorkspace(ws, tok_path, run, tied)


def make_lora_run(base: Path, dest: Path, rank: int = 4, seed: int = 3) -> Path:
    """A copy of run `base` whose checkpoint is LoRA adapters (random, B not zero) on base's own
    checkpoint, written as the trainer writes a LoRA stage's."""
    import torch
    from safetensors.torch import save_file

    from engine.jobs.rundir import RunDir
    from engine.model.decoder import Transformer
    from engine.model.lora import LoraSpec, adapter_tensors, apply_lora

    run = clone_run(base, dest)
    shutil.rmtree(run / "ckpt")
    spec = RunDir(run).spec()
    lora = LoraSpec(rank, alpha=8.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
    torch.manual_seed(seed)
    model = Transformer(spec.model)
    apply_lora(model, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0.0, 0.5)
    ckpt = run / "ckpt" / f"step-{STEP}"
    ckpt.mkdir(parents=True)
    save_file(adapter_tensors(model), str(ckpt / "model.safetensors"))
    base_ckpt = RunDir(base).latest_checkpoint()
    (ckpt / "state.json").write_text(json.dumps({"step": STEP, "tokenizer_hash": spec.tokenizer_hash,
                                                 "lora": lora.to_dict(), "lora_base": str(base_ckpt)}))
    return run


def clone_run(run_dir: Path, dest: Path, tokenizer: Path | None = None) -> Path:
    """A copy of a run folder at dest (stage.toml pointing at `tokenizer` when given)."""
    shutil.copytree(run_dir, dest)
    if tokenizer is not None:
        doc = tomllib.loads((dest / "stage.toml").read_text(encoding="utf-8"))
        doc["paths"]["tokenizer"] = str(tokenizer)
        (dest / "stage.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
    return dest


def load_run_model(run_dir: Path, step: int | None = None):
    """Our Transformer with the run's checkpoint weights (float32, eval mode)."""
    from engine.eval.run_model import find_checkpoint, load_model

    return load_model(find_checkpoint(run_dir, step))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, above all on a shared machine; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
