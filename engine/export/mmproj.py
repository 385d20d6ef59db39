"""The vision tower and projector as a llama.cpp multimodal projector (`mmproj.gguf`), beside the
decoder's model.gguf, for `llama-mtmd-cli -m model.gguf --mmproj mmproj.gguf --image FILE`.

llama.cpp's converter takes a LlavaForConditionalGeneration only with a Pixtral tower, so this file
is written here, in the layout llama.cpp's clip loader reads for LLaVA-1.5 ("mlp" projector): the
tower's tensor names from the `gguf` package's MMPROJ name map, the projector as mm.0 / mm.2.
Features come from the last tower layer without its post-layernorm (LLaVA's vision_feature_layer
-1, as our forward reads them): `clip.vision.feature_layer` = [layers] and no v.post_ln tensors.
llama.cpp's projector GELU is its tanh form where ours is exact (a difference near 1e-3 at most).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.export.common import ExportError
from engine.eval.run_model import RunCheckpoint

MMPROJ_FILE = "mmproj.gguf"
IMAGE_MEAN = IMAGE_STD = [0.5, 0.5, 0.5]  # engine.model.vision.to_pixels: [0, 255] -> [-1, 1]
_PROJECTOR = {"projector.linear_1.": "mm.0.", "projector.linear_2.": "mm.2."}
PROJECTOR_TYPE = "mlp"  # clip.cpp's name for LLaVA-1.5's projector (gguf has no constant for it)
FEATURE_LAYER = "clip.vision.feature_layer"


def mmproj_name(names, ours: str) -> str | None:
    """The mmproj tensor name of one of our vision.* / projector.* tensors; None for the post-layernorm
    (not read: features come before it)."""
    for prefix, theirs in _PROJECTOR.items():
        if ours.startswith(prefix):
            return theirs + ours[len(prefix):]
    if ours.startswith("vision.post_layernorm."):
        return None
    if not ours.startswith("vision."):
        raise ExportError(f"{ours}: not a vision tower or projector tensor")
    name = names.get_name("vision_tower.vision_model." + ours[len("vision."):], try_suffixes=(".weight", ".bias"))
    if name is None:
        raise ExportError(f"{ours}: no mmproj name for this tensor")
    return name


def export_mmproj(ckpt: RunCheckpoint, vision: dict[str, Any], dtype: str, out: Path) -> str:
    """Write out/mmproj.gguf from the checkpoint's vision tensors; returns the file's name. Matrices in
    f32 for --dtype f32, else f16 (llama.cpp keeps projectors in f16); vectors f32."""
    from engine.export.gguf import _gguf

    gguf = _gguf()
    cfg = ckpt.spec.model
    if cfg.pixel_shuffle != 1:
        raise ExportError(f"model.pixel_shuffle: llama.cpp's LLaVA projector takes every patch, expected 1 for "
                          f"an mmproj, got {cfg.pixel_shuffle}")
    if cfg.vision_mlp_dim == cfg.vision_width:  # clip.cpp takes such an MLP for an old file's swapped up/down
        raise ExportError(f"model.vision_mlp_dim: llama.cpp misreads a tower MLP as wide as the tower "
                          f"({cfg.vision_width}); an mmproj needs another width")
    writer = gguf.GGUFWriter(str(out / MMPROJ_FILE), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    try:
        writer.add_type(gguf.GGUFType.MMPROJ)
        writer.add_name(f"{ckpt.spec.run_id} step {ckpt.step} vision")
        writer.add_file_type(int(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16))
        writer.add_clip_has_vision_encoder(True)
        writer.add_clip_projector_type(PROJECTOR_TYPE)
        writer.add_vision_projection_dim(cfg.dim)
        writer.add_vision_image_size(cfg.image_size)
        writer.add_vision_patch_size(cfg.patch_size)
        writer.add_vision_embedding_length(cfg.vision_width)
        writer.add_vision_feed_forward_length(cfg.vision_mlp_dim)
        writer.add_vision_block_count(cfg.vision_layers)
        writer.add_vision_head_count(cfg.vision_heads)
        writer.add_vision_attention_layernorm_eps(float(cfg.vision_norm_eps))
        writer.add_vision_image_mean(IMAGE_MEAN)
        writer.add_vision_image_std(IMAGE_STD)
        writer.add_vision_use_gelu(True)  # the tower's MLP: GELU, tanh form, as SigLIP's
        writer.add_array(FEATURE_LAYER, [cfg.vision_layers])  # after the last layer (default: the one before)
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, cfg.vision_layers)
        for ours, tensor in sorted(vision.items()):
            name = mmproj_name(names, ours)
            if name is None:
                continue
            arr = np.ascontiguousarray(tensor.float().numpy(), dtype=np.float32)
            keep_f32 = dtype == "f32" or arr.ndim == 1 or name == "v.position_embd.weight"
            writer.add_tensor(name, arr if keep_f32 else arr.astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return MMPROJ_FILE
