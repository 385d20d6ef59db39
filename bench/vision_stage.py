"""fc450's joint stage on CUDA (the stand-in for the Mac's unified memory): peak memory at 1 image x 2048
tokens with activation checkpointing against `fcwork model info`'s estimate, and image-text tokens/s
against text-only tokens/s at the same sequence length, beside the tower's share of the FLOPs.

Both in one run: the same model (VisionLanguageModel, bf16 autocast, AdamW over every part), a
text micro-batch (no image) and an image micro-batch (196 `<image>` positions + text) alternated
after warm-up, so the ratio is measured under the same conditions.

Modes, in one process on one model: `eager-recompute` and `compiled-layers-recompute` are the tower
as it was (each layer checkpointed, each compiled on its own), `eager` and `compiled` as the
trainer runs it now (no recompute in the tower; the decoder's blocks and the tower's encoder
compiled, engine.train.distributed.compile_blocks), `cudagraphs` the same with the tower's encoder
captured as CUDA graphs (torch.compile mode "reduce-overhead").

    python bench/vision_stage.py [--steps 10]      # needs a CUDA device
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.model.config import PRESETS  # noqa: E402
from engine.model.info import memory_estimate, param_breakdown  # noqa: E402
from engine.model.multimodal import VisionLanguageModel  # noqa: E402
from engine.train.distributed import compile_blocks  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

GIB = 1024**3
VOCAB, SEQ, IMAGE_ID = 50000, 2048, 5


def _recompute_layers(encoder, x):
    for layer in encoder.layers:
        x = checkpoint(layer, x, use_reentrant=False)
    return x


def step(model, opt, x, pixels) -> None:
    torch.compiler.cudagraph_mark_step_begin()  # each step a new iteration of the captured tower
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.loss(x[:, :-1], x[:, 1:], images=pixels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(model, opt, x, pixels, steps: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(model, opt, x, pixels)
    torch.cuda.synchronize()
    return steps * SEQ / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--profile", action="store_true", help="two compiled image steps under torch.profiler")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("vision_stage: needs a CUDA device", file=sys.stderr)
        return 1
    cfg = PRESETS["fc450"].with_vocab(VOCAB)
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg, IMAGE_ID).cuda()
    model.set_activation_checkpointing(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    text = torch.randint(10, VOCAB, (1, SEQ + 1), device="cuda")
    image = text.clone()
    image[0, 1:1 + cfg.image_tokens] = IMAGE_ID
    pixels = torch.rand(1, 3, cfg.image_size, cfg.image_size, device="cuda") * 2 - 1
    counts = param_breakdown(cfg)
    patches = (cfg.image_size // cfg.patch_size) ** 2
    # 6 N per token (forward + backward) for the matmuls, the tower's over its patches.
    decoder_flops = 6 * (counts["decoder"] - counts["embedding"]) * SEQ
    tower_flops = 6 * counts["vision_tower"] * patches + 6 * counts["projector"] * cfg.image_tokens
    share = tower_flops / (decoder_flops + tower_flops)
    est = memory_estimate(cfg, SEQ, 1, True, "bf16", "cuda", include_vision=True)
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; fc450 joint, 1 image x {SEQ}, "
          f"activation checkpointing, bf16 autocast, AdamW; the tower's share of the FLOPs {share:.1%} "
          f"(FLOPs ratio image-text / text {1 / (1 - share):.3f})")
    enc = model.vision.encoder
    for mode in ("eager-recompute", "eager", "compiled-layers-recompute", "compiled", "cudagraphs"):
        # "-recompute": each tower layer checkpointed, as the tower was
        enc.forward = (lambda x, e=enc: _recompute_layers(e, x)) if mode.endswith("-recompute") \
            else type(enc).forward.__get__(enc)
        for m in [*model.layers, enc, *enc.layers]:
            m._compiled_call_impl = None
        if mode == "compiled-layers-recompute":
            for m in [*model.layers, *enc.layers]:
                m.compile()
        elif mode == "compiled":
            compile_blocks(model)
        elif mode == "cudagraphs":
            for m in model.layers:
                m.compile()
            enc.compile(mode="reduce-overhead")
        for x, px in ((image, pixels), (text, None), (image, pixels)):  # warm-up (and compile) both shapes
            step(model, opt, x, px)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, opt, image, pixels)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        text_tps = timed(model, opt, text, None, args.steps)
        image_tps = timed(model, opt, image, pixels, args.steps)
        print(f"{mode}: peak memory {peak / GIB:.2f} GiB; estimate {est['total'] / GIB:.2f} GiB; measured/estimate "
              f"{peak / est['total']:.2f}; tokens/s text-only {text_tps:,.0f}, image-text {image_tps:,.0f}: "
              f"time ratio {text_tps / image_tps:.3f}", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                step(model, opt, image, pixels)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
