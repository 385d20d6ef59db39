"""fc450's joint stage on CUDA (the stand-in for the Mac's unified memory): peak memory at 1 image x 2048
tokens with activation checkpointing against `fcwork model info`'s estimate, and image-text tokens/s
against text-only tokens/s at the same sequence length, beside the tower's share of the FLOPs.

Both in one run, on one model (VisionLanguageModel, bf16 autocast, AdamW over every part), through the
trainer's own token_losses and ImageWindow: an optimizer step is `--window` micro-batches (16, the
IMAGES_AT_ONCE a step puts through the tower together; fc450 joint's 48 micro-batches at 30% captions
carry 14 on average) of one image each (196 `<image>` positions in its first row), against a step of as
many text micro-batches; the two alternate after warm-up, so the ratio is measured under the same
conditions.

Modes, from one image a micro-batch to the trainer's path: `eager` the model uncompiled, one image a
micro-batch through the tower; `eager-window` uncompiled with the step's images through the tower
together (the Mac's path: compile is off on MPS); `compiled` the decoder's blocks and image_embeddings
compiled (engine.train.distributed.compile_blocks), one image a micro-batch (the trainer before the
window); `window` the same with the window (the trainer on CUDA now). At one image a micro-batch an H100
is host-bound (--profile prints the kernels' busy time a step, after every mode's timing); --micro-batch 8 (one image in
eight rows) makes the decoder's share GPU-bound.

    python bench/vision_stage.py [--steps 8] [--window 16] [--micro-batch 1] [--modes a,b] [--profile]
    python bench/vision_stage.py --preset tiny --device cpu --steps 1 --window 2              # a dry run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.model.config import PRESETS  # noqa: E402
from engine.model.info import (  # noqa: E402
    IMAGES_AT_ONCE,
    memory_estimate,
    param_breakdown,
    vision_activation_bytes,
)
from engine.model.multimodal import VisionLanguageModel  # noqa: E402
from engine.model.transfer import to_device  # noqa: E402
from engine.train.distributed import compile_blocks  # noqa: E402
from engine.train.image_window import ImageWindow  # noqa: E402
from engine.train.images import pixels  # noqa: E402
from engine.train.trainer import token_losses  # noqa: E402

GIB = 1024**3
VOCAB, SEQ, IMAGE_ID = 50000, 2048, 5
MODES = ("eager", "eager-window", "compiled", "window")


def set_mode(model, mode: str) -> None:
    """Undo the last mode's compile, then apply `mode`'s."""
    for m in model.layers:
        m._compiled_call_impl = None
    model.__dict__.pop("image_embeddings", None)
    torch._dynamo.reset()  # a fresh compile: one mode's cache entries must not serve or slow the next
    if mode in ("compiled", "window"):
        compile_blocks(model)


def step(model, opt, rows, images: list, dev: str, windowed: bool) -> None:
    """One optimizer step over len(images) micro-batches of host token rows (images[i]: micro-batch i's
    uint8 image, None for text), as engine.train.trainer's train_step runs them."""
    window = ImageWindow(model, images, torch.device(dev)) if windowed else None
    for micro, image in enumerate(images):
        x = to_device(rows, dev)
        with torch.autocast(dev, dtype=torch.bfloat16):
            if window is None:
                per_token = token_losses(model, x, pixels(image, dev))
            else:
                per_token = token_losses(model, x, None, None, window.embeddings(micro))
        (per_token.mean() / len(images)).backward()
        if window is not None:
            window.backward(micro)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(model, opt, x, images, steps: int, dev: str, windowed: bool) -> float:
    """Seconds per optimizer step."""
    sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step(model, opt, x, images, dev, windowed)
    sync(dev)
    return (time.perf_counter() - start) / steps


def profiled(model, opt, kinds: dict, dev: str, mode: str, windowed: bool, table: bool) -> None:
    """One step of each kind under torch.profiler: the kernels' busy time (beside the wall time above it
    says how host-bound the step is), where the host waited on the device (the op that called
    cuda*Synchronize), and the top kernels for the last mode."""
    import collections

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    busy, waits = {}, {}
    for label, (x, images) in kinds.items():
        with profile(activities=activities) as prof:
            step(model, opt, x, images, dev, windowed)
            sync(dev)
        waits[label] = collections.Counter()
        for e in prof.events():
            if "Synchronize" in e.name:
                chain, up = [], e.cpu_parent
                while up is not None:
                    chain.append(up.name)
                    up = up.cpu_parent
                waits[label][" < ".join(chain[:3]) or e.name] += 1
        events = prof.key_averages()
        busy[label] = sum(e.self_device_time_total for e in events
                          if e.device_type == DeviceType.CUDA and not e.is_user_annotation) / 1e3
        if table:
            print(events.table(sort_by="self_cuda_time_total" if dev == "cuda" else "self_cpu_time_total",
                               row_limit=12, max_name_column_width=60))
    text_ms, image_ms = busy["text-only"], busy["image-text"]
    print(f"{mode}, profiled: kernels busy {text_ms:.1f} ms a text-only step, {image_ms:.1f} ms an image-text "
          f"step: kernel-time ratio {image_ms / max(text_ms, 1e-9):.3f}", flush=True)
    for label, where in waits.items():
        print(f"{mode}, {label}: {sum(where.values()):g} wait(s) on the device a step"
              + "".join(f"; {n:g} x {k}" for k, n in where.most_common(6)), flush=True)


def tower_shares(cfg, seq: int, rows: int) -> tuple[float, float]:
    """The tower's (and projector's) share of an image micro-batch's FLOPs (one image in `rows` rows of
    `seq`): of the matmuls alone (6 N a token, the tower's over its patches), and all-in (attention's
    scores and mixing, causal in the decoder, and the forward that activation checkpointing recomputes
    in the decoder's blocks)."""
    counts = param_breakdown(cfg)
    patches = (cfg.image_size // cfg.patch_size) ** 2
    tokens = seq * rows
    decoder = 6 * (counts["decoder"] - counts["embedding"]) * tokens  # lm_head included
    tower = 6 * counts["vision_tower"] * patches + 6 * counts["projector"] * cfg.image_tokens
    share = tower / (decoder + tower)
    attention_fwd = 2 * cfg.n_layers * cfg.dim * seq * tokens  # QK^T and AV, 4 L d T^2 halved by the mask
    blocks_fwd = 2 * (counts["decoder"] - counts["embedding"] - counts["lm_head"]) * tokens + attention_fwd
    decoder_all = decoder + 3 * attention_fwd + blocks_fwd  # backward is twice forward; one forward again
    tower_all = tower + 3 * 4 * cfg.vision_layers * cfg.vision_width * patches * patches
    return share, tower_all / (decoder_all + tower_all)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="pairs of optimizer steps timed (text, image)")
    ap.add_argument("--window", type=int, default=IMAGES_AT_ONCE, help="micro-batches an optimizer step")
    ap.add_argument("--micro-batch", type=int, default=1, help="rows a micro-batch (an image in the first)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--preset", default="fc450", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--profile", action="store_true", help="each mode's kernel busy time (torch.profiler)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if bad := [m for m in modes if m not in MODES]:
        print(f"vision_stage: --modes: unknown {', '.join(bad)} (expected {', '.join(MODES)})", file=sys.stderr)
        return 2
    if args.window <= 0 or args.micro_batch <= 0 or args.steps <= 0:
        print("vision_stage: --steps, --window and --micro-batch: expected positive integers", file=sys.stderr)
        return 2
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("vision_stage: needs a CUDA device (or --device cpu for a dry run)", file=sys.stderr)
        return 1
    cfg = PRESETS[args.preset].with_vocab(VOCAB)
    seq, rows, k = min(SEQ, cfg.max_seq_len), args.micro_batch, args.window
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg, IMAGE_ID).to(dev)
    model.set_activation_checkpointing(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=dev == "cuda")
    g = np.random.default_rng(0)
    text = g.integers(10, VOCAB, (rows, seq + 1))
    image = text.copy()
    image[0, 1:1 + cfg.image_tokens] = IMAGE_ID
    kinds = {"text-only": (text, [None] * k),
             "image-text": (image, [g.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
                                    for _ in range(k)])}
    share, all_in = tower_shares(cfg, seq, rows)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {args.preset} joint, micro-batches of {rows} x {seq} "
          f"(one image in an image micro-batch), {k} a step, activation checkpointing, bf16 autocast, AdamW; "
          f"the tower's share of an image micro-batch's FLOPs {share:.1%} (FLOPs ratio image-text / text "
          f"{1 / (1 - share):.3f}); all-in {all_in:.1%} (ratio {1 / (1 - all_in):.3f})", flush=True)
    tokens = k * rows * seq
    for mode in modes:  # all the timings first: a profiler run slows the host of what follows it
        windowed = mode.endswith("window")
        est = memory_estimate(cfg, seq, rows, True, "bf16", dev, include_vision=True, grad_accum=k)
        if not windowed:  # one image a micro-batch holds one image's activations at a time
            est["total"] -= (est["images"] - 1) * vision_activation_bytes(cfg, 1, "bf16")
            est["images"] = 1
        began = time.perf_counter()
        set_mode(model, mode)
        for label in ("image-text", "text-only", "image-text"):  # warm-up (and compile) both kinds
            step(model, opt, *kinds[label], dev, windowed)
        sync(dev)
        warm = time.perf_counter() - began
        peak = 0.0
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(model, opt, *kinds["image-text"], dev, windowed)
            sync(dev)
            peak = torch.cuda.max_memory_allocated()
        # Steps of the two kinds in pairs, each pair's ratio: the host's speed drifts by a fifth from
        # minute to minute on a shared machine, and a pair sees the same drift.
        pairs = [(timed(model, opt, *kinds["text-only"], 1, dev, windowed),
                  timed(model, opt, *kinds["image-text"], 1, dev, windowed)) for _ in range(args.steps)]
        text_s, image_s = statistics.median(t for t, _ in pairs), statistics.median(i for _, i in pairs)
        ratios = sorted(i / t for t, i in pairs)
        low, high = ratios[len(ratios) // 4], ratios[-1 - len(ratios) // 4]
        print(f"{mode}: peak {peak / GIB:.2f} GiB (estimate {est['total'] / GIB:.2f} with {est['images']} "
              f"image(s) held, measured/estimate {peak / est['total']:.2f}); a step of {k} micro-batches "
              f"(medians of {len(pairs)}): text-only {text_s * 1e3:.1f} ms = {tokens / text_s:,.0f} tok/s, "
              f"image-text {image_s * 1e3:.1f} ms = {tokens / image_s:,.0f} tok/s: time ratio "
              f"{statistics.median(ratios):.3f} (quartiles {low:.3f}-{high:.3f}) vs FLOPs {1 / (1 - share):.3f} "
              f"(all-in {1 / (1 - all_in):.3f}); warm-up {warm:.0f} s", flush=True)
    for mode in modes if args.profile else ():
        windowed = mode.endswith("window")
        set_mode(model, mode)
        for label in ("image-text", "text-only"):
            step(model, opt, *kinds[label], dev, windowed)
        profiled(model, opt, kinds, dev, mode, windowed, table=mode == modes[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
