"""What every export format shares: the options, where the folder goes, and its provenance file.

An export is a folder `runs/<id>/exports/<format>-<dtype>-step<N>/` (or `--out DIR`) written
through `atomic_dir`, so a failed export never leaves a half-written folder that looks complete.
Every export folder holds `fcwork-export.json`: run, step, checkpoint hash, tokenizer hash.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_text
from engine.errors import FcError
from engine.eval.run_model import RunCheckpoint
from engine.jobs.rundir import RunDir

FORMATS = ("hf", "gguf", "mlx")
DTYPES = ("f32", "f16", "bf16", "q8")
MANIFEST = "fcwork-export.json"
# Hugging Face's names for our dtypes (config.json "torch_dtype"/"dtype").
HF_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


class ExportError(FcError):
    """An export option is not possible for this format or this machine."""


@dataclass
class ExportResult:
    """What an export wrote."""

    format: str
    dtype: str
    path: Path
    run_id: str
    step: int
    checkpoint_sha256: str
    files: list[str]


def check_options(fmt: str, dtype: str) -> None:
    """One-line errors for an unknown format or dtype."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")


def default_out(ckpt: RunCheckpoint, fmt: str, dtype: str) -> Path:
    """runs/<id>/exports/<format>-<dtype>-step<N>/"""
    return RunDir(ckpt.spec.run_dir).exports_dir / f"{fmt}-{dtype}-step{ckpt.step}"


def torch_dtype(dtype: str):
    """The torch dtype that stores weights of an export dtype (q8 is quantised from float32)."""
    import torch

    return {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "q8": torch.float32}[dtype]


def write_manifest(out: Path, ckpt: RunCheckpoint, fmt: str, dtype: str, extra: dict[str, Any] | None = None) -> None:
    """fcwork-export.json: where these weights came from."""
    doc = {
        "format": fmt,
        "dtype": dtype,
        "run": ckpt.spec.run_id,
        "profile": ckpt.spec.profile,
        "stage": ckpt.spec.stage.name,
        "step": ckpt.step,
        "checkpoint_sha256": ckpt.sha256,
        "tokenizer_sha256": ckpt.spec.tokenizer_hash,
        "model": asdict(ckpt.spec.model),
        "created": time.time(),
        **(extra or {}),
    }
    atomic_write_text(out / MANIFEST, json.dumps(doc, indent=2) + "\n")


def write_vision(out: Path, vision: dict[str, Any], ckpt: RunCheckpoint) -> list[str]:
    """In an mlx export the vision tower / projector go beside the decoder as their own safetensors
    file and config (our names; mlx-lm has no LLaVA loader): the weights stay with the export
    instead of being dropped silently."""
    if not vision:
        return []
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vision.items()}, str(out / "vision.safetensors"),
              metadata={"run": ckpt.spec.run_id, "step": str(ckpt.step)})
    config = {
        "kind": "fcwork-vision-tower",
        "vision_params": sum(v.numel() for v in vision.values()),
        "image_size": ckpt.spec.model.image_size,
        "patch_size": ckpt.spec.model.patch_size,
        "text_hidden_size": ckpt.spec.model.dim,
        "tensors": {k: list(v.shape) for k, v in sorted(vision.items())},
    }
    atomic_write_text(out / "vision_config.json", json.dumps(config, indent=2) + "\n")
    return ["vision.safetensors", "vision_config.json"]


def listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())
