"""fc450's joint stage on CUDA (the stand-in for the Mac's unified memory): peak memory at 1 image x 2048
tokens with activation checkpointing against `fcwork model info`'s estimate, and image-text tokens/s
against text-only tokens/s at the same sequence length, beside the tower's share of the FLOPs.

Both in one run: the same model (VisionLanguageModel, bf16 autocast, AdamW over every part), a
text micro-batch (no image) and an image micro-batch (196 `<image>` positions + text per row, one image
a row) alternated after warm-up, so the ratio is measured under the same conditions.

Modes, in one process on one model, from the tower as it was to the trainer's path:
`layers-recompute-scatter` each tower layer compiled on its own and checkpointed, images put in with
masked_scatter (whose backward waits on the device); `encoder-scatter` the tower's encoder compiled as
one graph, no recompute, masked_scatter; `eager` the model uncompiled, as the trainer runs it without
compile; `compiled` the trainer's path (engine.train.distributed.compile_blocks: the decoder's blocks,
and image_embeddings, patches to projector, as one function; the sync-free splice); `cudagraphs` the
same with image_embeddings captured as CUDA graphs (torch.compile mode "reduce-overhead").
At micro-batch 1 an H100 is host-bound (--profile prints the kernels' busy time a step beside it);
--micro-batch 8 (one image a row) shows the tower's cost where the GPU is the bottleneck.

    python bench/vision_stage.py [--steps 10] [--micro-batch 1] [--modes a,b] [--profile]
    python bench/vision_stage.py --preset tiny --device cpu --steps 2                         # a dry run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import engine.model.multimodal as multimodal  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.model.info import memory_estimate, param_breakdown  # noqa: E402
from engine.model.multimodal import VisionLanguageModel  # noqa: E402
from engine.train.distributed import compile_blocks  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

GIB = 1024**3
VOCAB, SEQ, IMAGE_ID = 50000, 2048, 5
MODES = ("layers-recompute-scatter", "encoder-scatter", "eager", "compiled", "cudagraphs")
SPLICE = multimodal.splice_images


def _scatter(h, mask, feats):
    return h.masked_scatter(mask[..., None], feats.to(h.dtype))


def _recompute_layers(encoder, x):
    for layer in encoder.layers:
        x = checkpoint(layer, x, use_reentrant=False)
    return x


def set_mode(model, mode: str) -> None:
    """Undo the last mode's compile and patches, then apply `mode`'s."""
    enc = model.vision.encoder
    for m in [*model.layers, enc, *enc.layers]:
        m._compiled_call_impl = None
    model.__dict__.pop("image_embeddings", None)
    torch._dynamo.reset()  # a fresh compile: one mode's cache entries must not serve or slow the next
    multimodal.splice_images = _scatter if mode.endswith("-scatter") else SPLICE
    enc.forward = (lambda x, e=enc: _recompute_layers(e, x)) if "recompute" in mode \
        else type(enc).forward.__get__(enc)
    if mode == "layers-recompute-scatter":
        for m in [*model.layers, *enc.layers]:
            m.compile()
    elif mode == "encoder-scatter":
        for m in [*model.layers, enc]:
            m.compile()
    elif mode == "compiled":
        compile_blocks(model)
    elif mode == "cudagraphs":
        for m in model.layers:
            m.compile()
        whole = VisionLanguageModel.image_embeddings.__get__(model)
        model.image_embeddings = torch.compile(whole, mode="reduce-overhead")


def step(model, opt, x, pixels, device: str) -> None:
    torch.compiler.cudagraph_mark_step_begin()  # each step a new iteration of a captured tower
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = model.loss(x[:, :-1], x[:, 1:], images=pixels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(model, opt, x, pixels, steps: int, device: str) -> float:
    """Seconds per step."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(model, opt, x, pixels, device)
    sync(device)
    return (time.perf_counter() - start) / steps


def profiled(model, opt, text, image, pixels, dev: str, mode: str, table: bool) -> None:
    """Two steps of each kind under torch.profiler: the kernels' busy time a step (beside the wall time
    above it says how host-bound the step is), where the host waited on the device (the op that called
    cuda*Synchronize), and the top kernels for the last mode."""
    import collections

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    busy, waits = {}, {}
    for label, x, px in (("text-only", text, None), ("image-text", image, pixels)):
        with profile(activities=activities) as prof:
            for _ in range(2):
                step(model, opt, x, px, dev)
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
                          if e.device_type == DeviceType.CUDA and not e.is_user_annotation) / 2e3
        if table:
            print(events.table(sort_by="self_cuda_time_total" if dev == "cuda" else "self_cpu_time_total",
                               row_limit=12, max_name_column_width=60))
    text_ms, image_ms = busy["text-only"], busy["image-text"]
    print(f"{mode}, profiled: kernels busy {text_ms:.1f} ms a text-only step, {image_ms:.1f} ms an image-text "
          f"step: kernel-time ratio {image_ms / max(text_ms, 1e-9):.3f}", flush=True)
    for label, where in waits.items():
        print(f"{mode}, {label}: {sum(where.values()) / 2:g} wait(s) on the device a step"
              + "".join(f"; {n / 2:g} x {k}" for k, n in where.most_common(6)), flush=True)


def tower_shares(cfg, seq: int) -> tuple[float, float]:
    """The tower's (and projector's) share of an image step's FLOPs: of the matmuls alone (6 N a token,
    the tower's over its patches), and all-in (attention's scores and mixing, causal in the decoder,
    and the forward that activation checkpointing recomputes in the decoder's blocks)."""
    counts = param_breakdown(cfg)
    patches = (cfg.image_size // cfg.patch_size) ** 2
    decoder = 6 * (counts["decoder"] - counts["embedding"]) * seq  # lm_head included
    tower = 6 * counts["vision_tower"] * patches + 6 * counts["projector"] * cfg.image_tokens
    share = tower / (decoder + tower)
    attention_fwd = 2 * cfg.n_layers * cfg.dim * seq * seq  # QK^T and AV, 4 L d T^2 halved by the mask
    blocks_fwd = 2 * (counts["decoder"] - counts["embedding"] - counts["lm_head"]) * seq + attention_fwd
    decoder_all = decoder + 3 * attention_fwd + blocks_fwd  # backward is twice forward; one forward again
    tower_all = tower + 3 * 4 * cfg.vision_layers * cfg.vision_width * patches * patches
    return share, tower_all / (decoder_all + tower_all)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--micro-batch", type=int, default=1, help="rows a micro-batch, one image a row")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--preset", default="fc450", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--profile", action="store_true", help="each mode's kernel busy time (torch.profiler)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if bad := [m for m in modes if m not in MODES]:
        print(f"vision_stage: --modes: unknown {', '.join(bad)} (expected {', '.join(MODES)})", file=sys.stderr)
        return 2
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("vision_stage: needs a CUDA device (or --device cpu for a dry run)", file=sys.stderr)
        return 1
    cfg = PRESETS[args.preset].with_vocab(VOCAB)
    seq, rows = min(SEQ, cfg.max_seq_len), args.micro_batch
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg, IMAGE_ID).to(dev)
    model.set_activation_checkpointing(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=dev == "cuda")
    text = torch.randint(10, VOCAB, (rows, seq + 1), device=dev)
    image = text.clone()
    image[:, 1:1 + cfg.image_tokens] = IMAGE_ID
    pixels = torch.rand(rows, 3, cfg.image_size, cfg.image_size, device=dev) * 2 - 1
    share, all_in = tower_shares(cfg, seq)
    est = memory_estimate(cfg, seq, rows, True, "bf16", dev, include_vision=True)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {args.preset} joint, {rows} x {seq} ({rows} image(s)), "
          f"activation checkpointing, bf16 autocast, AdamW; the tower's share of the FLOPs {share:.1%} "
          f"(FLOPs ratio image-text / text {1 / (1 - share):.3f}); all-in {all_in:.1%} "
          f"(ratio {1 / (1 - all_in):.3f})", flush=True)
    for mode in modes:
        began = time.perf_counter()
        set_mode(model, mode)
        for x, px in ((image, pixels), (text, None), (image, pixels)):  # warm-up (and compile) both shapes
            step(model, opt, x, px, dev)
        sync(dev)
        warm = time.perf_counter() - began
        peak = 0.0
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(model, opt, image, pixels, dev)
            sync(dev)
            peak = torch.cuda.max_memory_allocated()
        # Alternate the two so drift (clocks, other work) falls on both.
        text_s = image_s = 0.0
        for _ in range(2):
            text_s += timed(model, opt, text, None, args.steps, dev) / 2
            image_s += timed(model, opt, image, pixels, args.steps, dev) / 2
        tokens = rows * seq
        print(f"{mode}: peak {peak / GIB:.2f} GiB (estimate {est['total'] / GIB:.2f}, measured/estimate "
              f"{peak / est['total']:.2f}); text-only {text_s * 1e3:.1f} ms/step = {tokens / text_s:,.0f} tok/s, "
              f"image-text {image_s * 1e3:.1f} ms = {tokens / image_s:,.0f} tok/s "
              f"(+{(image_s - text_s) * 1e3:.1f} ms): "
              f"time ratio {image_s / text_s:.3f} vs FLOPs {1 / (1 - share):.3f}; warm-up {warm:.0f} s", flush=True)
        if args.profile:
            profiled(model, opt, text, image, pixels, dev, mode, table=mode == modes[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
