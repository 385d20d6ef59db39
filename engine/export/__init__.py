"""Exports that real clients load: Hugging Face (transformers), GGUF (llama.cpp), MLX (mlx-lm).

`export_run(run_dir, fmt, dtype, step, out)` checks the run (tokenizer unchanged, a plain Llama
decoder, optionally with our vision tower), then writes the folder atomically. A run with a tower
exports to hf in the LLaVA layout; gguf and mlx take the decoder and keep the tower beside it. Importing this package does not import torch.
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

__all__ = ["DTYPES", "FORMATS", "ExportError", "ExportResult", "export_run"]


def export_run(
    run_dir: str | os.PathLike, fmt: str, dtype: str = "f32", step: int | None = None,
    out: str | os.PathLike | None = None, permute_qk: bool = True,
) -> ExportResult:
    """Export checkpoint `step` (the latest when None) of a run; returns what was written where."""
    from engine.export.common import write_manifest, write_vision
    from engine.eval.run_model import find_checkpoint, read_tensors

    check_options(fmt, dtype)
    if fmt == "hf" and dtype == "q8":
        raise ExportError("--dtype q8: the hf format stores f32, f16 or bf16 (q8: use --format gguf or mlx)")
    ckpt = find_checkpoint(run_dir, step)
    decoder, vision = read_tensors(ckpt)
    target = Path(out).expanduser() if out else default_out(ckpt, fmt, dtype)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).exists())):
        raise ExportError(f"--out {target}: exists and is not an earlier fcwork export; pick a new folder "
                          "(an export replaces its folder whole)")
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
            if fmt != "hf":  # hf holds the tower itself (the LLaVA layout); the others the decoder alone
                write_vision(tmp, vision, ckpt)
            write_manifest(tmp, ckpt, fmt, dtype, {"qk_permuted": permute_qk} if fmt == "gguf" else None)
            files = listing(tmp)
    except OSError as exc:  # a read-only run folder, a full disk, an --out under a file
        raise ExportError(f"{target}: cannot write the export ({os_error_line(exc)})") from None
    return ExportResult(fmt, dtype, target, ckpt.spec.run_id, ckpt.step, ckpt.sha256, files)
