"""Our state-dict names <-> transformers `LlamaForCausalLM` names, and its config.json from a ModelConfig.

Our q/k weights are already in Hugging Face's rotate-half layout, so conversion is a rename only.
No torch import: the maps work on any mapping of names to tensors.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, TypeVar

from engine.errors import ModelError
from engine.model.config import ModelConfig

T = TypeVar("T")

# (our name, HF name); "{i}" stands for a layer index.
_GLOBAL = (
    ("embed.weight", "model.embed_tokens.weight"),
    ("norm.weight", "model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
)
_LAYER = (
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn.q_proj.weight", "self_attn.q_proj.weight"),
    ("attn.k_proj.weight", "self_attn.k_proj.weight"),
    ("attn.v_proj.weight", "self_attn.v_proj.weight"),
    ("attn.o_proj.weight", "self_attn.o_proj.weight"),
    ("mlp_norm.weight", "post_attention_layernorm.weight"),
    ("mlp.gate_proj.weight", "mlp.gate_proj.weight"),
    ("mlp.up_proj.weight", "mlp.up_proj.weight"),
    ("mlp.down_proj.weight", "mlp.down_proj.weight"),
)
_OURS_TO_HF = dict(_GLOBAL) | {f"layers.{{i}}.{a}": f"model.layers.{{i}}.{b}" for a, b in _LAYER}
_HF_TO_OURS = {b: a for a, b in _OURS_TO_HF.items()}
_INDEX = re.compile(r"\.(\d+)\.")


def _rename(name: str, table: Mapping[str, str], side: str) -> str:
    m = _INDEX.search(name)
    key = name[: m.start()] + ".{i}." + name[m.end():] if m else name
    if key not in table:
        raise ModelError(f"{side} state dict: unknown parameter name {name!r}")
    return table[key].replace("{i}", m.group(1)) if m else table[key]


def _shares_storage(a: Any, b: Any) -> bool:
    ptr = getattr(a, "data_ptr", None)
    return a is b or (ptr is not None and ptr() == b.data_ptr() and a.shape == b.shape)


def state_dict_to_hf(sd: Mapping[str, T], tied: bool | None = None) -> dict[str, T]:
    """Rename our weights to LlamaForCausalLM's; a tied lm head is left out (HF ties it on load).

    `tied=None` detects tying: lm_head.weight absent or sharing storage with embed.weight.
    """
    if tied is None:
        head, embed = sd.get("lm_head.weight"), sd.get("embed.weight")
        tied = head is None or (embed is not None and _shares_storage(head, embed))
    return {_rename(k, _OURS_TO_HF, "our"): v for k, v in sd.items() if not (tied and k == "lm_head.weight")}


def hf_to_state_dict(sd: Mapping[str, T], tied: bool | None = None) -> dict[str, T]:
    """Rename LlamaForCausalLM weights to ours; a missing (tied) lm head becomes the embedding.

    Buffers HF may include (rotary inv_freq) are dropped: we compute RoPE tables ourselves.
    """
    out = {_rename(k, _HF_TO_OURS, "Hugging Face"): v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    if tied is None:
        tied = "lm_head.weight" not in out
    if tied and "embed.weight" in out:
        out["lm_head.weight"] = out["embed.weight"]
    return out


def hf_config_dict(cfg: ModelConfig, bos_id: int = 1, eos_id: int = 2, dtype: str = "float32") -> dict[str, Any]:
    """The config.json of a LlamaForCausalLM with our shape (token ids as in docs/formats.md).

    `rope_theta` is written both at the top (transformers 4.x, llama.cpp's converter) and in
    `rope_parameters` (transformers 5.x).
    """
    if cfg.vocab_size <= 0:
        raise ModelError(f"model.vocab_size: expected a positive integer for export, got {cfg.vocab_size}")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": float(cfg.rope_theta),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": bool(cfg.tie_embeddings),
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": dtype,
    }


# -- the vision half: LlavaForConditionalGeneration = SigLIP vision tower + projector + Llama ---------

# Our prefix -> LLaVA's. The tower's and the projector's names below the prefix are transformers' own.
_LLAVA_PREFIXES = (
    ("vision.", "model.vision_tower."),
    ("projector.", "model.multi_modal_projector."),
)
# Where a SigLIP vision tower's tensors may sit in a checkpoint someone else saved (SiglipModel,
# SiglipVisionModel, LLaVA), longest first.
SIGLIP_PREFIXES = ("model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower.vision_model.",
                   "vision_tower.", "vision_model.", "")


def state_dict_to_llava(sd: Mapping[str, T], tied: bool | None = None) -> dict[str, T]:
    """Rename our multimodal weights (decoder, vision.*, projector.*) to LlavaForConditionalGeneration's."""
    decoder = {k: v for k, v in sd.items() if not k.startswith(("vision.", "projector."))}
    out: dict[str, T] = {}
    for name, value in state_dict_to_hf(decoder, tied).items():
        out["model.language_model." + name[len("model."):] if name.startswith("model.") else name] = value
    for name, value in sd.items():
        for ours, theirs in _LLAVA_PREFIXES:
            if name.startswith(ours):
                out[theirs + name[len(ours):]] = value
    return out


def llava_to_state_dict(sd: Mapping[str, T], tied: bool | None = None) -> dict[str, T]:
    """Rename LlavaForConditionalGeneration weights to ours (the inverse of state_dict_to_llava)."""
    decoder: dict[str, T] = {}
    out: dict[str, T] = {}
    for name, value in sd.items():
        for ours, theirs in _LLAVA_PREFIXES:
            if name.startswith(theirs):
                out[ours + name[len(theirs):]] = value
                break
        else:
            if name.startswith("model.language_model."):
                decoder["model." + name[len("model.language_model."):]] = value
            elif name == "lm_head.weight":
                decoder[name] = value
            else:
                raise ModelError(f"LLaVA state dict: unknown parameter name {name!r}")
    return {**hf_to_state_dict(decoder, tied), **out}


def siglip_vision_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The `vision_config` of a LLaVA config.json (a SiglipVisionConfig) with our tower's shape."""
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": cfg.vision_width,
        "intermediate_size": cfg.vision_mlp_dim,
        "num_hidden_layers": cfg.vision_layers,
        "num_attention_heads": cfg.vision_heads,
        "num_channels": 3,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": cfg.vision_norm_eps,
        "attention_dropout": 0.0,
        "vision_use_head": False,
    }


def llava_config_dict(cfg: ModelConfig, image_token_id: int, bos_id: int = 1, eos_id: int = 2,
                      dtype: str = "float32") -> dict[str, Any]:
    """config.json of a LlavaForConditionalGeneration: our decoder as text_config, our tower as
    vision_config, features from the last tower layer (-1) with every patch kept ("full": no class token)."""
    if not cfg.has_vision:
        raise ModelError("model.vision_layers: a LLaVA export needs a vision tower, the model has none")
    if cfg.pixel_shuffle != 1:
        raise ModelError(f"model.pixel_shuffle: LLaVA feeds every patch to its projector, expected 1 for the "
                         f"hf export, got {cfg.pixel_shuffle}")
    text = hf_config_dict(cfg, bos_id, eos_id, dtype)
    text.pop("architectures")
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": text,
        "vision_config": siglip_vision_config_dict(cfg),
        "image_token_index": image_token_id,
        "image_token_id": image_token_id,
        "image_seq_length": cfg.image_tokens,
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": True,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "tie_word_embeddings": bool(cfg.tie_embeddings),
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": dtype,
        "dtype": dtype,
    }
