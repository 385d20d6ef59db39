"""Exports that real clients load: Hugging Face (transformers), GGUF (llama.cpp), MLX (mlx-lm).

`export_run(run_dir, fmt, dtype, step, out)` checks the run (tokenizer unchanged, a plain Llama
decoder, optionally with our vision tower), then writes the folder atomically. A run with a tower
exports to hf in the LLaVA layout; gguf writes the tower and projector beside the decoder as
llama.cpp's mmproj.gguf; mlx keeps them beside the decoder in our names. Importing this package
does not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.atomic import atomic_dir
from engine.errors import os_error_line
from engine.export.common import (
    DTYPES,
    FORMATS,
    MANIFEST,
    ExportError,
    ExportResult,
    check_options,
    default_out,
    listing,
)

__all__ = ["DTYPES", "FORMATS", "ExportError", "ExportResult", "export_adapters", "export_run"]
ADAPTER_CONFIG, ADAPTER_FILE = "adapter_config.json", "adapter_model.safetensors"  # PEFT's file names


def export_adapters(run_dir: str | os.PathLike, step: int | None = None,
                    out: str | os.PathLike | None = None) -> ExportResult:
    """A LoRA run's adapters alone, in PEFT's layout on our hf export: adapter_config.json and
    adapter_model.safetensors (`PeftModel.from_pretrained(hf_model, folder)` loads them)."""
    import json

    from safetensors.torch import save_file

    from engine.atomic import atomic_write_text
    from engine.eval.run_model import find_checkpoint, lora_parts
    from engine.export.common import write_manifest
    from engine.model.lora import peft_config, peft_tensors

    ckpt = find_checkpoint(run_dir, step)
    parts = lora_parts(ckpt.path, ckpt.state)
    if parts is None:
        raise ExportError(f"--adapters-only: run {ckpt.spec.run_id} trained every weight (its stage has no "
                          "lora_rank); export it whole with --format hf|gguf|mlx")
    spec, adapters, base = parts
    target = Path(out).expanduser() if out else default_out(ckpt, "adapters", "f32")
    _check_target(target)
    try:
        with atomic_dir(target) as tmp:
            save_file(peft_tensors(adapters), str(tmp / ADAPTER_FILE), metadata={"format": "pt"})
            atomic_write_text(tmp / ADAPTER_CONFIG, json.dumps(peft_config(spec, str(base)), indent=2) + "\n")
            write_manifest(tmp, ckpt, "adapters", "f32", {"base_checkpoint": str(base)})
            files = listing(tmp)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write the export ({os_error_line(exc)})") from None
    return ExportResult("adapters", "f32", target, ckpt.spec.run_id, ckpt.step, ckpt.sha256, files)


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).exists())):
        raise ExportError(f"--out {target}: exists and is not an earlier fcwork export; pick a new folder "
                          "(an export replaces its folder whole)")


def export_run(
    run_dir: str | os.PathLike, fmt: str, dtype: str = "f32", step: int | None = None,
    out: str | os.PathLike | None = None, permute_qk: bool = True,
) -> ExportResult:
    """Export checkpoint `step` (the latest when None) of a run, a LoRA run's adapters merged into its
    base; returns what was written where."""
    from engine.export.common import write_manifest, write_vision
    from engine.eval.run_model import find_checkpoint, read_tensors

    check_options(fmt, dtype)
    if fmt == "hf" and dtype == "q8":
        raise ExportError("--dtype q8: the hf format stores f32, f16 or bf16 (q8: use --format gguf or mlx)")
    ckpt = find_checkpoint(run_dir, step)
    decoder, vision = read_tensors(ckpt)
    target = Path(out).expanduser() if out else default_out(ckpt, fmt, dtype)
    _check_target(target)
    try:
        with atomic_dir(target) as tmp:
            if fmt == "hf":
                from engine.export.hf import export_hf

                export_hf(ckpt, decoder, dtype, tmp, vision)
            elif fmt == "gguf":
                from engine.export.gguf import export_gguf

                export_gguf(ckpt, decoder, dtype, tmp, permute_qk=permute_qk)
            else:
                from engine.export.mlx import export_mlx

                export_mlx(ckpt, decoder, dtype, tmp)
            if fmt == "gguf" and vision:  # llama.cpp reads a tower from its own file beside the decoder
                from engine.export.mmproj import export_mmproj

                export_mmproj(ckpt, vision, dtype, tmp)
            elif fmt == "mlx":  # hf holds the tower itself (the LLaVA layout); mlx the decoder alone
                write_vision(tmp, vision, ckpt)
            write_manifest(tmp, ckpt, fmt, dtype, {"qk_permuted": permute_qk} if fmt == "gguf" else None)
            files = listing(tmp)
    except OSError as exc:  # a read-only run folder, a full disk, an --out under a file
        raise ExportError(f"{target}: cannot write the export ({os_error_line(exc)})") from None
    return ExportResult(fmt, dtype, target, ckpt.spec.run_id, ckpt.step, ckpt.sha256, files)
