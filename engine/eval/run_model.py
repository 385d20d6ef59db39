"""A run's trained model for eval and export: pick the checkpoint, check the tokenizer, read the weights.

Both refuse a run whose tokenizer file changed since training (its SHA-256 no longer matches
stage.toml), and only a plain Llama decoder is accepted, with or without our vision tower and
projector (`vision.*`, `projector.*`, in the shapes of the run's model): every tensor of the
checkpoint must be one of those. The vision tensors are handed back separately; a checkpoint that
has them loads as a VisionLanguageModel.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelError, RunError, TokenizerError, differing_prefixes
from engine.model.config import ModelConfig
from engine.jobs.rundir import CKPT_STATE, RunDir
from engine.jobs.spec import RunSpec
from engine.data.tokenizer import file_hash

MODEL_FILE = "model.safetensors"
# Tensors of the vision tower and its projector (an align stage adds them); never part of the decoder.
VISION_PREFIXES = ("vision.", "projector.")
IMAGE_PIECE = "<image>"


@dataclass
class RunCheckpoint:
    """One checkpoint of a run, with what identifies it."""

    spec: RunSpec
    step: int
    path: Path        # ckpt/step-<N>/
    sha256: str       # of model.safetensors
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> Path:
        return self.path / MODEL_FILE


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_tokenizer(spec: RunSpec) -> None:
    """Refuse a run whose tokenizer file is gone or differs from the one it trained with."""
    where = RunDir(spec.run_dir).stage_file
    if not spec.tokenizer.exists():
        raise TokenizerError(
            f"{spec.tokenizer}: tokenizer of run {spec.run_id} is missing (paths.tokenizer in {where})")
    now = file_hash(spec.tokenizer)
    if now != spec.tokenizer_hash:
        now_p, theirs_p = differing_prefixes(now, spec.tokenizer_hash)
        raise TokenizerError(
            f"{spec.tokenizer}: changed since run {spec.run_id} trained (sha256 {now_p}..., {where} says "
            f"{theirs_p}...); restore that tokenizer file or retrain"
        )


def find_checkpoint(run_dir: str | os.PathLike, step: int | None = None) -> RunCheckpoint:
    """The run's checkpoint at `step` (the latest when None), with the run's tokenizer checked."""
    run = RunDir(run_dir)
    spec = run.spec()
    found = run.checkpoints()
    if not found:
        raise RunError(f"{run.ckpt_dir}: run {spec.run_id} has no checkpoint yet")
    if step is None:
        step, path = found[-1]
    else:
        match = [p for s, p in found if s == step]
        if not match:
            have = ", ".join(str(s) for s, _ in found)
            raise RunError(f"{run.ckpt_dir}: no checkpoint at step {step} (have steps {have})")
        path = match[0]
    check_tokenizer(spec)
    if not (path / MODEL_FILE).exists():
        raise ModelError(f"{path / MODEL_FILE}: missing")
    state = read_state(path)
    theirs = state.get("tokenizer_hash")
    if theirs and theirs != spec.tokenizer_hash:
        theirs_p, ours_p = differing_prefixes(str(theirs), spec.tokenizer_hash)
        raise TokenizerError(
            f"{path / CKPT_STATE}: tokenizer_hash {theirs_p}... differs from the run's "
            f"{ours_p}... (the checkpoint was trained with another tokenizer)"
        )
    return RunCheckpoint(spec, step, path, sha256_file(path / MODEL_FILE), state)


def decoder_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors a plain Llama decoder of this shape saves (our names)."""
    kv = cfg.n_kv_heads * cfg.head_dim
    layer = {
        "attn_norm.weight": (cfg.dim,), "attn.q_proj.weight": (cfg.n_heads * cfg.head_dim, cfg.dim),
        "attn.k_proj.weight": (kv, cfg.dim), "attn.v_proj.weight": (kv, cfg.dim),
        "attn.o_proj.weight": (cfg.dim, cfg.n_heads * cfg.head_dim), "mlp_norm.weight": (cfg.dim,),
        "mlp.gate_proj.weight": (cfg.ffn_dim, cfg.dim), "mlp.up_proj.weight": (cfg.ffn_dim, cfg.dim),
        "mlp.down_proj.weight": (cfg.dim, cfg.ffn_dim),
    }
    out: dict[str, tuple[int, ...]] = {"embed.weight": (cfg.vocab_size, cfg.dim)}
    for i in range(cfg.n_layers):
        out.update({f"layers.{i}.{k}": v for k, v in layer.items()})
    out["norm.weight"] = (cfg.dim,)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = (cfg.vocab_size, cfg.dim)
    return out


def vision_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tower's and projector's tensors (our names); empty without a tower."""
    if not cfg.has_vision:
        return {}
    import torch

    from engine.model.projector import Projector
    from engine.model.vision import VisionTower

    with torch.device("meta"):
        parts = {"vision.": VisionTower(cfg), "projector.": Projector(cfg)}
    return {prefix + k: tuple(v.shape) for prefix, part in parts.items() for k, v in part.state_dict().items()}


def split_decoder(tensors: dict[str, Any], cfg: ModelConfig, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(decoder tensors, vision tensors); ModelError for anything that makes it not a plain Llama decoder
    (plus, all or none, the run's vision tower and projector)."""
    expected = decoder_shapes(cfg)
    tower = vision_shapes(cfg) if any(n.startswith(VISION_PREFIXES) for n in tensors) else {}
    decoder, vision = {}, {}
    for name, t in tensors.items():
        if name.startswith(VISION_PREFIXES):
            if name not in tower:
                have = "the run's model has no vision tower" if not cfg.has_vision else \
                    "not a tensor of the run's vision tower or projector"
                raise ModelError(f"{where}: {name}: {have}")
            if tuple(t.shape) != tower[name]:
                raise ModelError(
                    f"{where}: {name}: shape {list(t.shape)} does not match the model's {list(tower[name])}")
            vision[name] = t
        elif name in expected:
            if tuple(t.shape) != expected[name]:
                raise ModelError(
                    f"{where}: {name}: shape {list(t.shape)} does not match the model's {list(expected[name])}")
            decoder[name] = t
        elif name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # a tied head saved anyway is the embedding
        else:
            raise ModelError(
                f"{where}: {name}: not a tensor of a plain Llama decoder (export takes RMSNorm/RoPE/SwiGLU/GQA "
                "decoders without biases, plus an optional vision tower under vision./projector.)"
            )
    missing = [n for n in expected if n not in decoder] + [n for n in tower if n not in vision]
    if missing:
        raise ModelError(f"{where}: {missing[0]}: missing (the checkpoint is of another model shape)")
    return decoder, vision


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint folder's state.json ({} when it says nothing readable)."""
    try:
        state = json.loads((path / CKPT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path / CKPT_STATE}: unreadable checkpoint state ({exc})") from None
    return state if isinstance(state, dict) else {}


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None


def lora_parts(path: Path, state: dict[str, Any] | None = None):
    """(LoraSpec, adapter tensors, base checkpoint folder) of a LoRA checkpoint; None for a whole model."""
    from engine.model.lora import LoraSpec

    state = read_state(path) if state is None else state
    if "lora" not in state:
        return None
    spec = LoraSpec.from_dict(state["lora"], f"{path / CKPT_STATE}: lora")
    base = Path(str(state.get("lora_base", "")))
    if not str(state.get("lora_base", "")) or not (base / MODEL_FILE).exists():
        raise RunError(f"{path / CKPT_STATE}: lora_base {str(base)!r}: the base checkpoint the adapters were "
                       "trained on is gone (its run or checkpoint was removed)")
    return spec, _load_safetensors(path / MODEL_FILE), base


def checkpoint_weights(path: Path, depth: int = 0) -> dict[str, Any]:
    """A checkpoint folder's whole model: its weights, or for a LoRA run its adapters merged onto the
    base checkpoint it names (itself possibly a LoRA run's)."""
    from engine.model.lora import merge

    parts = lora_parts(path)
    if parts is None:
        return _load_safetensors(path / MODEL_FILE)
    if depth > 8:
        raise RunError(f"{path / CKPT_STATE}: lora_base: a chain of more than 8 LoRA runs")
    spec, adapters, base = parts
    return merge(checkpoint_weights(base, depth + 1), adapters, spec)


def read_tensors(ckpt: RunCheckpoint) -> tuple[dict[str, Any], dict[str, Any]]:
    """(decoder, vision) tensors of a checkpoint (a LoRA run's merged), as float32 torch tensors on the CPU."""
    import torch

    raw = checkpoint_weights(ckpt.path)
    decoder, vision = split_decoder(raw, ckpt.spec.model, str(ckpt.weights))
    return ({k: v.to(torch.float32) for k, v in decoder.items()},
            {k: v.to(torch.float32) for k, v in vision.items()})


def load_tokenizer(ckpt: RunCheckpoint):
    """The run's tokenizer, refused when its vocabulary does not fit the checkpoint's model."""
    from engine.data.tokenizer import Tokenizer

    tok = Tokenizer.load(ckpt.spec.tokenizer)
    if tok.vocab_size != ckpt.spec.model.vocab_size:
        raise RunError(f"{ckpt.spec.tokenizer}: {tok.vocab_size} pieces, but the run's model has vocab_size "
                       f"{ckpt.spec.model.vocab_size}")
    return tok


def image_token_id(tok, where: str | os.PathLike = "") -> int:
    """The tokenizer's id of the `<image>` piece (a user symbol of every profile's tokenizer)."""
    i = tok.sp.piece_to_id(IMAGE_PIECE)
    if tok.sp.id_to_piece(i) != IMAGE_PIECE:  # an unknown piece maps to <unk>
        raise TokenizerError(f"{where or tok.path}: no {IMAGE_PIECE} piece (tokenizer.user_symbols must keep it "
                             "for a model with a vision tower); retrain the tokenizer")
    return i


def load_model(ckpt: RunCheckpoint, device: str = "cpu"):
    """The run's model with the checkpoint's weights, in eval mode (float32): a Transformer, or a
    VisionLanguageModel when the checkpoint holds a vision tower."""
    import torch

    from engine.model.decoder import Transformer
    from engine.model.multimodal import VisionLanguageModel

    decoder, vision = read_tensors(ckpt)
    with torch.device(device):
        if vision:
            model = VisionLanguageModel(ckpt.spec.model, image_token_id(load_tokenizer(ckpt), ckpt.spec.tokenizer))
        else:
            model = Transformer(ckpt.spec.model)
    missing, unexpected = model.load_state_dict({**decoder, **vision}, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and ckpt.spec.model.tie_embeddings)]
    if missing or unexpected:
        raise ModelError(f"{ckpt.weights}: {(missing or unexpected)[0]}: does not fit the model")
    return model.eval()
