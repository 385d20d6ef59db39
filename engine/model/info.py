"""Parameter counts and training-memory estimates computed from a ModelConfig, without torch.

The queue pane and `fcwork model info` use these to show what a stage will cost on a device
before anything is built; tests check the counts against the real torch model.
"""

from __future__ import annotations

import platform
import shutil
import sys

from engine.errors import ModelError
from engine.model.config import PRESETS, ModelConfig

DEVICES = ("cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")
# The most images the trainer puts through the tower at once (engine.train.image_window): a step's
# images go through together, in groups of this many, so their activations are held that long.
IMAGES_AT_ONCE = 16


def vision_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of the SigLIP-layout tower (patch conv, positions, blocks, post norm) and the projector."""
    if not cfg.has_vision:
        return {"vision_tower": 0, "projector": 0, "total": 0}
    w, m = cfg.vision_width, cfg.vision_mlp_dim
    patch_embed = 3 * cfg.patch_size * cfg.patch_size * w + w
    positions = (cfg.image_size // cfg.patch_size) ** 2 * w
    block = 2 * (2 * w) + 4 * (w * w + w) + (w * m + m) + (m * w + w)
    tower = patch_embed + positions + cfg.vision_layers * block + 2 * w
    into = w * cfg.pixel_shuffle ** 2
    projector = (into * cfg.dim + cfg.dim) + (cfg.dim * cfg.dim + cfg.dim)
    return {"vision_tower": tower, "projector": projector, "total": tower + projector}


def vision_activation_bytes(cfg: ModelConfig, images: int, precision: str) -> int:
    """Bytes the tower and projector keep for the backward pass for `images` images (approximate):
    per patch and layer both norms' inputs, the q/k/v input, q, k, v, the attention output, the MLP's
    two inputs and its GELU's input; the [heads, P, P] attention probabilities are not kept (fused).
    The tower never recomputes (activation checkpointing is the decoder's): fc450 keeps about 64 MiB
    an image, 1 GiB for the IMAGES_AT_ONCE a step puts through it together, a ninth of the `joint`
    stage's peak; recomputing would add a third to the tower's FLOPs to save it."""
    if not cfg.has_vision or images <= 0:
        return 0
    a = 2 if precision == "bf16" else 4
    w, m = cfg.vision_width, cfg.vision_mlp_dim
    patches = (cfg.image_size // cfg.patch_size) ** 2
    per_layer = 2 * 4 * w + a * (w + 3 * w + w + w) + a * 2 * m
    projector = cfg.image_tokens * (a * w * cfg.pixel_shuffle ** 2 + a * 2 * cfg.dim)
    return images * (patches * (cfg.vision_layers * per_layer + 4 * w) + projector)


def _need_vocab(cfg: ModelConfig) -> None:
    if cfg.vocab_size <= 0:
        raise ModelError(f"model.vocab_size: expected a positive integer (the tokenizer's), got {cfg.vocab_size}")


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by component: embedding, attention, mlp, norms, lm_head (0 when tied), decoder,
    vision_tower, projector, vision (the two), total."""
    _need_vocab(cfg)
    d, hd = cfg.dim, cfg.head_dim
    attention = cfg.n_layers * (d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2)
    mlp = cfg.n_layers * 3 * d * cfg.ffn_dim
    norms = (2 * cfg.n_layers + 1) * d
    embedding = cfg.vocab_size * d
    lm_head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    decoder = embedding + attention + mlp + norms + lm_head
    vision = vision_params(cfg)
    return {
        "embedding": embedding,
        "attention": attention,
        "mlp": mlp,
        "norms": norms,
        "lm_head": lm_head,
        "decoder": decoder,
        "vision_tower": vision["vision_tower"],
        "projector": vision["projector"],
        "vision": vision["total"],
        "total": decoder + vision["total"],
    }


def train_flops(cfg: ModelConfig, seq_len: int, tower_trained: bool = True,
                projector_trained: bool = True) -> tuple[int, int]:
    """Training FLOPs (forward and backward, no recompute) of one decoder token and of one image, for
    MFU: 6 a matmul weight (the embedding lookup is free, a tied head is a matmul) plus attention's
    scores and mixing (12 L d T a token, unmasked, as PaLM counts); an image's are the tower's over
    its patches and the projector's over its image tokens, paid once an image, not once a token. A
    frozen tower runs forward only (its input is pixels: nothing to pass a gradient to); a frozen
    projector still passes gradients to a trained tower."""
    counts = param_breakdown(cfg)
    head = counts["embedding"] if cfg.tie_embeddings else counts["lm_head"]
    per_token = 6 * (counts["attention"] + counts["mlp"] + head) + 12 * cfg.n_layers * cfg.dim * seq_len
    if not cfg.has_vision:
        return per_token, 0
    w, m, patches = cfg.vision_width, cfg.vision_mlp_dim, (cfg.image_size // cfg.patch_size) ** 2
    tower = 3 * cfg.patch_size ** 2 * w + cfg.vision_layers * (4 * w * w + 2 * w * m)
    projector = w * cfg.pixel_shuffle ** 2 * cfg.dim + cfg.dim * cfg.dim
    tower_passes = 3 if tower_trained else 1  # forward, and the backward's two matmuls a weight
    projector_passes = 3 if projector_trained else 2 if tower_trained else 1
    per_image = (tower_passes * (2 * tower * patches + 4 * cfg.vision_layers * w * patches * patches)
                 + projector_passes * 2 * projector * cfg.image_tokens)
    return per_token, per_image


def guess_device() -> str:
    """The device a run here would pick, guessed without importing torch: mps on Apple Silicon, cuda with nvidia-smi."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps"
    if shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """`auto` is bf16 autocast on cuda and mps, fp32 on cpu."""
    if precision == "auto":
        return "fp32" if device == "cpu" else "bf16"
    if precision == "fp8":  # bf16 activations (float8 keeps smaller copies): bf16 is the upper bound
        return "bf16"
    if precision not in PRECISIONS:
        raise ModelError(f"precision: expected 'auto', 'fp32', 'bf16' or 'fp8', got {precision!r}")
    return precision


def activation_bytes_per_token_layer(cfg: ModelConfig, seq_len: int, precision: str, device: str) -> int:
    """Bytes one block keeps for its backward pass, per token (approximate).

    The residual stream is in the compute dtype (the decoder casts the embedding to bf16 under
    autocast); with bf16 autocast every linear keeps its own bf16 copy of its input. Saved: both norms' inputs, the linears' inputs
    (q/k/v share one, gate/up share one), rotated q, k and v, the attention output and its
    reshaped copy, and the MLP's gate, up, silu(gate) and product. mps's attention keeps the
    [heads, T, T] scores and probabilities; cuda and cpu use fused kernels that do not.
    """
    a = 2 if precision == "bf16" else 4
    d, kv = cfg.dim, cfg.n_kv_heads * cfg.head_dim
    norm_inputs = 2 * a * d
    linear_inputs = (3 + 2) * a * d if precision == "bf16" else 2 * 4 * d
    attention = a * (d + 2 * kv) + a * 2 * d + 4 * cfg.n_heads
    mlp = a * 4 * cfg.ffn_dim
    scores = 2 * a * cfg.n_heads * seq_len if device == "mps" else 0
    return norm_inputs + linear_inputs + attention + mlp + scores


def memory_estimate(
    cfg: ModelConfig,
    seq_len: int,
    micro_batch: int,
    activation_checkpointing: bool = False,
    precision: str = "auto",
    device: str = "auto",
    include_vision: bool = False,
    devices: int = 1,
    strategy: str = "ddp",
    grad_accum: int = 1,
) -> dict:
    """Training memory in bytes on each device: fp32 weights, grads, AdamW moments (fp32),
    activations and logits.

    An upper-bound style estimate for one micro-batch (every term counted at its peak). With
    activation checkpointing only each block's input is kept, plus one block's activations
    while it is recomputed. The vision tower and projector (their weights, and the activations of
    the images held at once: one a micro-batch, a step's `grad_accum` of them together up to
    IMAGES_AT_ONCE on one device, engine.train.image_window) count only with `include_vision`. On `devices` (all of them, every node's) with DDP each device holds everything; with FSDP the weights,
    gradients and moments are split `devices` ways, and `gathered` counts the whole parameters
    in use: the root's (embedding, lm head) and two blocks' (one computing, one prefetched) in
    the compute dtype, plus one block's unsharded gradients in fp32 before they are reduced.
    """
    _need_vocab(cfg)
    for name, value in (("seq_len", seq_len), ("micro_batch", micro_batch), ("grad_accum", grad_accum)):
        if not isinstance(value, int) or value <= 0:
            raise ModelError(f"{name}: expected a positive integer, got {value!r}")
    if seq_len > cfg.max_seq_len:
        raise ModelError(f"seq_len: expected at most the model's max_seq_len ({cfg.max_seq_len}), got {seq_len}")
    device = guess_device() if device == "auto" else device
    if device not in DEVICES:
        raise ModelError(f"device: expected 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")
    precision = resolve_precision(precision, device)
    if strategy not in STRATEGIES:
        raise ModelError(f"strategy: expected 'ddp' or 'fsdp', got {strategy!r}")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices <= 0:
        raise ModelError(f"devices: expected a positive integer, got {devices!r}")
    counts = param_breakdown(cfg)
    params = counts["total"] if include_vision else counts["decoder"]
    a = 2 if precision == "bf16" else 4
    tokens = seq_len * micro_batch
    per_layer = activation_bytes_per_token_layer(cfg, seq_len, precision, device)
    if activation_checkpointing:
        blocks = tokens * (cfg.n_layers * a * cfg.dim + per_layer)
    else:
        blocks = tokens * cfg.n_layers * per_layer
    final_norm = tokens * cfg.dim * (4 + a)
    # One image per micro-batch (the Mac's terms); one device puts a step's through the tower together.
    held = min(IMAGES_AT_ONCE, grad_accum) if devices == 1 else 1
    vision_acts = vision_activation_bytes(cfg, held, precision) if include_vision else 0
    activations = blocks + final_norm + vision_acts
    # The logits in the compute dtype (kept for the loss's backward), plus two float32 tensors of
    # their size at the peak: the upcast and log-softmax in the forward, the softmax-gradient and
    # its cast in the backward.
    logits = tokens * cfg.vocab_size * (a + 4 + 4)
    shards = devices if strategy == "fsdp" else 1
    gathered = 0
    block = (counts["attention"] + counts["mlp"] + counts["norms"] - cfg.dim) // cfg.n_layers
    root = counts["embedding"] + counts["lm_head"] + cfg.dim
    if shards > 1:
        gathered = a * (root + 2 * block) + 4 * block
    # Autocast's bf16 copies live from the forward to the backward; recomputed blocks make their own
    # again one at a time.
    cast = 0
    if precision == "bf16" and shards == 1:
        cast = 2 * (root + block) if activation_checkpointing else 2 * params
    out = {
        "device": device,
        "precision": precision,
        "devices": devices,
        "strategy": strategy,
        "params": params,
        "weights": -(-4 * params // shards),
        "grads": -(-4 * params // shards),
        "optimizer": -(-8 * params // shards),
        # FSDP gathers bf16 parameters itself (its mixed-precision policy): no autocast copies.
        "cast_weights": cast,
        "gathered": gathered,
        "activations": activations,
        "logits": logits,
        "images": held if include_vision else 0,  # images whose tower activations count
    }
    # The peak: the gradients (set to None after each step) appear as the backward frees the
    # activations and the logits, so at one micro-batch a step the larger of the two sets counts, not
    # both (measured on an H200 within 10% for every fc450 stage: bench/train_mfu.py --memory); from a
    # step's second micro-batch on the gradients are there while the forward runs, and both count
    # (fc450 joint, 16 micro-batches: bench/vision_stage.py).
    forward = out["cast_weights"] + activations + logits
    live = out["grads"] + forward if grad_accum > 1 else max(out["grads"], forward)
    out["total"] = out["weights"] + out["optimizer"] + gathered + live
    return out


def default_vocab(preset: str) -> int:
    """The vocabulary `model info` assumes: the default profile's 8000 for tiny, the plan's 50000 otherwise."""
    return 8000 if preset == "tiny" else 50000


def preset(name: str) -> ModelConfig:
    """A preset by name, or a one-line error listing the presets."""
    if name not in PRESETS:
        raise ModelError(f"model preset {name!r}: unknown (expected one of {', '.join(PRESETS)})")
    return PRESETS[name]
