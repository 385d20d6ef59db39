"""Hugging Face export: a folder `AutoModelForCausalLM` and `AutoTokenizer` load offline.

config.json (LlamaForCausalLM), model.safetensors with transformers' names (our q/k weights are
already in its rotate-half layout, so this is a rename), generation_config.json, and the
tokenizer files from engine.export.hf_tokenizer. mlx-lm reads the same layout.

A checkpoint with a vision tower is written in the LLaVA layout instead
(LlavaForConditionalGeneration: SigLIP vision tower + projector + the Llama decoder), with the
image processor's and the processor's configs, so `AutoProcessor` turns `<image>` + an image into
the model's inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_text
from engine.export.common import HF_DTYPE, ExportError, torch_dtype
from engine.export.hf_tokenizer import write_hf_tokenizer
from engine.model.hf_names import hf_config_dict, llava_config_dict, state_dict_to_hf, state_dict_to_llava
from engine.eval.run_model import IMAGE_PIECE, RunCheckpoint, image_token_id, load_tokenizer
from engine.data.tokenizer import BOS_ID, EOS_ID


def _hf_dtype(dtype: str) -> str:
    """transformers' name of an export dtype (q8 has none)."""
    if dtype not in HF_DTYPE:
        raise ExportError(f"--dtype {dtype}: the hf format stores f32, f16 or bf16 (q8: use --format gguf or mlx)")
    return HF_DTYPE[dtype]


def _write_model(out: Path, ckpt: RunCheckpoint, config: dict[str, Any], tensors: dict[str, Any], dtype: str) -> None:
    """What both layouts hold: config.json, model.safetensors (`tensors` cast to the export dtype),
    generation_config.json and the tokenizer files."""
    from safetensors.torch import save_file

    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    cast = torch_dtype(dtype)
    save_file({k: v.to(cast).contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt", "run": ckpt.spec.run_id, "step": str(ckpt.step)})
    generation = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": False}
    atomic_write_text(out / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    write_hf_tokenizer(ckpt.spec.tokenizer, out)


def write_hf_folder(out: Path, ckpt: RunCheckpoint, decoder: dict[str, Any], dtype: str) -> None:
    """config.json (LlamaForCausalLM), model.safetensors with its names, generation_config.json and
    tokenizer files in `out`."""
    cfg = ckpt.spec.model
    config = hf_config_dict(cfg, BOS_ID, EOS_ID, _hf_dtype(dtype))
    config["dtype"] = HF_DTYPE[dtype]  # transformers 5.x name of torch_dtype
    _write_model(out, ckpt, config, state_dict_to_hf(decoder, tied=cfg.tie_embeddings), dtype)


def export_hf(ckpt: RunCheckpoint, decoder: dict[str, Any], dtype: str, out: Path,
              vision: dict[str, Any] | None = None) -> None:
    """Write the Hugging Face folder for this checkpoint (the LLaVA layout when it has a vision tower)."""
    if vision:
        write_llava_folder(out, ckpt, decoder, vision, dtype)
    else:
        write_hf_folder(out, ckpt, decoder, dtype)


def write_llava_folder(out: Path, ckpt: RunCheckpoint, decoder: dict[str, Any], vision: dict[str, Any],
                       dtype: str) -> None:
    """config.json (LlavaForConditionalGeneration), model.safetensors with LLaVA's names,
    generation_config.json, tokenizer files, preprocessor_config.json and processor_config.json."""
    hf_dtype = _hf_dtype(dtype)
    cfg = ckpt.spec.model
    image_id = image_token_id(load_tokenizer(ckpt), ckpt.spec.tokenizer)
    tensors = state_dict_to_llava({**decoder, **vision}, tied=cfg.tie_embeddings)
    _write_model(out, ckpt, llava_config_dict(cfg, image_id, BOS_ID, EOS_ID, hf_dtype), tensors, dtype)
    # SigLIP's preprocessing: resize to the tower's square, then x / 255, mean 0.5, std 0.5 per channel
    # (our image shards letterbox instead of stretching; an image already square is treated the same).
    image_processor = {
        "image_processor_type": "SiglipImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_resize": True,
        "size": {"height": cfg.image_size, "width": cfg.image_size},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    atomic_write_text(out / "preprocessor_config.json", json.dumps(image_processor, indent=2) + "\n")
    # The processor expands each <image> to (image_size / patch_size)^2 copies: every patch, no class token.
    processor = {
        "processor_class": "LlavaProcessor",
        "image_token": IMAGE_PIECE,
        "patch_size": cfg.patch_size,
        "vision_feature_select_strategy": "full",
        "num_additional_image_tokens": 0,
    }
    atomic_write_text(out / "processor_config.json", json.dumps(processor, indent=2) + "\n")
