"""`precision = "fp8"`: the decoder's linears train in float8 through torchao (Hopper and Ada GPUs).

torchao swaps each chosen nn.Linear for its Float8Linear, which keeps the same weight (fp32 master,
same name), so checkpoints, exports and a later bf16 or CPU resume are unchanged. The lm head
stays in bf16 (its logits feed the loss directly; float8 there costs accuracy for little speed).
"""

from __future__ import annotations

from torch import nn

from engine.errors import RunError

RECIPES = ("tensorwise", "rowwise")
MIN_CAPABILITY = (8, 9)  # float8 tensor cores: Ada (8.9) and Hopper (9.0) on


def check_fp8(capability: tuple[int, int] | None, origin: str) -> None:
    """RunError unless float8 training can run here: a CUDA GPU of capability 8.9 or newer and torchao."""
    if capability is None:
        raise RunError(f"{origin}.precision: \"fp8\" needs a CUDA GPU (Ada or Hopper); use \"bf16\" here")
    if tuple(capability) < MIN_CAPABILITY:
        raise RunError(f"{origin}.precision: \"fp8\" needs a GPU of compute capability 8.9 or newer, "
                       f"this one is {capability[0]}.{capability[1]}; use \"bf16\"")
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        raise RunError(f"{origin}.precision: \"fp8\" needs torchao (pip install 'fcwork[fp8]')") from None


def _wanted(module: nn.Module, name: str) -> bool:
    """Float8 matmuls need both dimensions divisible by 16; the lm head stays in bf16, and so do the
    tower and projector (their matmuls are small, and one tensorwise scale over a step's images would
    let one image's outliers cost the others precision)."""
    if name.endswith("lm_head") or name.startswith(("vision.", "projector.")) or not isinstance(module, nn.Linear):
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_to_fp8(model: nn.Module, recipe: str) -> int:
    """Swap the model's eligible linears for torchao's Float8Linear in place; returns how many."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    if recipe not in RECIPES:
        raise RunError(f"stage.fp8_recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")
    names = [name for name, m in model.named_modules() if _wanted(m, name)]
    convert_to_float8_training(model, module_filter_fn=_wanted, config=Float8LinearConfig.from_recipe_name(recipe))
    return len(names)
