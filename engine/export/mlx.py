"""MLX export: the folder `mlx_lm.load(dir)` reads (config.json with model_type llama, safetensors
weights under transformers' names, the tokenizer), optionally quantised to 8 bits by mlx-lm's own
converter when mlx is installed.

mlx-lm's llama model uses Hugging Face's rotate-half RoPE (`nn.RoPE(traditional=False)`), so the
weights need no permutation; f32/f16/bf16 are written directly, without needing mlx here.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

from engine.export.common import ExportError
from engine.export.hf import write_hf_folder
from engine.eval.run_model import RunCheckpoint

Q_BITS = 8
Q_GROUP = 64


def _mlx_convert():
    try:
        from mlx_lm import convert
    except ImportError:
        raise ExportError(
            "--format mlx --dtype q8 quantises with mlx-lm, which is not installed here "
            "(pip install \"mlx[cpu]\" mlx-lm on Linux, mlx-lm on a Mac); f32/f16/bf16 need no mlx"
        ) from None
    return convert


def export_mlx(ckpt: RunCheckpoint, decoder: dict[str, Any], dtype: str, out: Path) -> None:
    """Write the mlx-lm folder; q8 goes through mlx_lm.convert from a float32 folder."""
    if dtype != "q8":
        write_hf_folder(out, ckpt, decoder, dtype)
        return
    cfg = ckpt.spec.model
    if cfg.dim % Q_GROUP or cfg.ffn_dim % Q_GROUP:
        raise ExportError(f"--dtype q8: mlx quantises in groups of {Q_GROUP}; dim {cfg.dim} and ffn_dim {cfg.ffn_dim} "
                          "must both be multiples of it")
    convert = _mlx_convert()
    source = out / ".f32"
    target = out / ".q8"
    source.mkdir()
    write_hf_folder(source, ckpt, decoder, "f32")
    with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints progress; the CLI reports instead
        convert(str(source), str(target), quantize=True, q_bits=Q_BITS, q_group_size=Q_GROUP)
    for item in target.iterdir():
        shutil.move(str(item), out / item.name)
    shutil.rmtree(source)
    shutil.rmtree(target)
