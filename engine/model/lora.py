"""LoRA: low-rank adapters on the decoder's projections, the base weights frozen.

A adapted projection computes W x + (alpha / r) B A dropout(x), with A [r, in] initialised as
PEFT does (Kaiming uniform) and B [out, r] at zero, so training starts from the base model exactly.
The adapters keep our parameter names plus `.lora_A` / `.lora_B`; `peft_tensors` and `peft_config`
give them in PEFT's layout on our Hugging Face export (peft is the test oracle, not a dependency);
`merge` folds them into plain weights for an export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.model.hf_names import state_dict_to_hf

# Target name of a stage's lora_targets -> the module path inside a Block.
TARGETS = {"q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.o_proj",
           "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
SUFFIXES = (".lora_A", ".lora_B")


@dataclass(frozen=True)
class LoraSpec:
    """What a stage's lora_* keys say: rank, alpha, dropout and target projections."""

    rank: int
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = field(default_factory=lambda: tuple(TARGETS))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "lora") -> "LoraSpec":
        try:
            return cls(int(data["rank"]), float(data["alpha"]), float(data["dropout"]), tuple(data["targets"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: expected rank, alpha, dropout and targets ({exc})") from None


class LoraLinear(nn.Linear):
    """An nn.Linear (its `weight` frozen, under its own name) with a low-rank update beside it."""

    def __init__(self, base: nn.Linear, spec: LoraSpec) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.register_parameter("bias", None)
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(spec.rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, spec.rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = spec.scaling
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight) + update * self.scaling


def apply_lora(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Freeze every weight of `model` (a Transformer) and put adapters on the target projections of
    every layer; returns the adapted modules' names. Seed torch first for reproducible A matrices."""
    unknown = [t for t in spec.targets if t not in TARGETS]
    if unknown or spec.rank <= 0:
        raise ModelError(f"lora: expected rank > 0 and targets among {', '.join(TARGETS)}, got rank "
                         f"{spec.rank}, targets {list(spec.targets)}")
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for i, layer in enumerate(model.layers):
        for t in spec.targets:
            parent_name, _, attr = TARGETS[t].rpartition(".")
            parent = layer.get_submodule(parent_name)
            setattr(parent, attr, LoraLinear(getattr(parent, attr), spec))
            names.append(f"layers.{i}.{TARGETS[t]}")
    return names


def is_adapter(name: str) -> bool:
    return name.endswith(SUFFIXES)


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors on the CPU, by our names (`layers.0.attn.q_proj.lora_A`)."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if is_adapter(n)}


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters counted once)."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    return sum(p.numel() for p in seen.values() if p.requires_grad), total


def merge(weights: Mapping[str, torch.Tensor], adapters: Mapping[str, torch.Tensor], spec: LoraSpec) -> dict[str, torch.Tensor]:
    """Plain weights with the adapters folded in: W + (alpha / r) B A (in float32, then W's dtype)."""
    out = dict(weights)
    for name in adapters:
        if not name.endswith(".lora_A"):
            continue
        module = name[: -len(".lora_A")]
        key = f"{module}.weight"
        if key not in out or f"{module}.lora_B" not in adapters:
            raise ModelError(f"adapters: {name}: no weight {key} or lora_B beside it")
        w = out[key]
        delta = adapters[f"{module}.lora_B"].float() @ adapters[name].float()
        out[key] = (w.float() + spec.scaling * delta.to(w.device)).to(w.dtype)
    return out


def peft_tensors(adapters: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapter tensors under PEFT's saved names on our HF export:
    `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`."""
    out = {}
    for name, t in adapters.items():
        module, _, which = name.rpartition(".")
        hf = next(iter(state_dict_to_hf({f"{module}.weight": t}, tied=False)))
        out[f"base_model.model.{hf[: -len('.weight')]}.{which}.weight"] = t.contiguous()
    return out


def peft_config(spec: LoraSpec, base: str = "") -> dict[str, Any]:
    """PEFT's adapter_config.json for these adapters (target modules by their HF names)."""
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base,
        "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
        "target_modules": sorted(TARGETS[t].rpartition(".")[2] for t in spec.targets),
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": None, "use_rslora": False, "use_dora": False, "layers_to_transform": None,
        "rank_pattern": {}, "alpha_pattern": {},
    }
