"""Hugging Face export: a folder `AutoModelForCausalLM` and `AutoTokenizer` load offline.

config.json (LlamaForCausalLM), model.safetensors with transformers' names (our q/k weights are
already in its rotate-half layout, so this is a rename), generation_config.json, and the
tokenizer files from engine.export.hf_tokenizer. mlx-lm reads the same layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_text
from engine.export.common import HF_DTYPE, ExportError, torch_dtype
from engine.export.hf_tokenizer import write_hf_tokenizer
from engine.model.hf_names import hf_config_dict, state_dict_to_hf
from engine.eval.run_model import RunCheckpoint
from engine.data.tokenizer import BOS_ID, EOS_ID


def hf_tensors(decoder: dict[str, Any], dtype: str, tied: bool) -> dict[str, Any]:
    """Our decoder tensors renamed to LlamaForCausalLM's, cast to the export dtype, contiguous."""
    cast = torch_dtype(dtype)
    return {k: v.to(cast).contiguous() for k, v in state_dict_to_hf(decoder, tied=tied).items()}


def write_hf_folder(out: Path, ckpt: RunCheckpoint, decoder: dict[str, Any], dtype: str,
                    extra_config: dict[str, Any] | None = None) -> None:
    """config.json, model.safetensors, generation_config.json and tokenizer files in `out`."""
    from safetensors.torch import save_file

    if dtype not in HF_DTYPE:
        raise ExportError(f"--dtype {dtype}: the hf format stores f32, f16 or bf16 (q8: use --format gguf or mlx)")
    cfg = ckpt.spec.model
    config = hf_config_dict(cfg, BOS_ID, EOS_ID, HF_DTYPE[dtype])
    config["dtype"] = HF_DTYPE[dtype]  # transformers 5.x name of torch_dtype
    config.update(extra_config or {})
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    save_file(hf_tensors(decoder, dtype, cfg.tie_embeddings), str(out / "model.safetensors"),
              metadata={"format": "pt", "run": ckpt.spec.run_id, "step": str(ckpt.step)})
    generation = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": False}
    atomic_write_text(out / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    write_hf_tokenizer(ckpt.spec.tokenizer, out)


def export_hf(ckpt: RunCheckpoint, decoder: dict[str, Any], dtype: str, out: Path) -> None:
    """Write the Hugging Face folder for this checkpoint."""
    write_hf_folder(out, ckpt, decoder, dtype)
