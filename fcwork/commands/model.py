"""`fcwork model info PRESET`: parameters by component and the training-memory estimate (no torch)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from engine.model.info import (
    DEVICES,
    STRATEGIES,
    default_vocab,
    memory_estimate,
    param_breakdown,
    preset,
)

GIB = 1024**3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect model presets")
    ps = p.add_subparsers(dest="model_cmd", metavar="ACTION", required=True)
    i = ps.add_parser("info", help="parameters by component and the memory a training step needs")
    i.add_argument("preset", help="tiny, stage0 or fc450")
    i.add_argument("--vocab", type=int, help="vocabulary size (default: 8000 for tiny, else 50000)")
    i.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the preset's max_seq_len)")
    i.add_argument("--micro-batch", type=int, default=1, help="sequences per micro-batch (default 1)")
    i.add_argument("--checkpointing", action="store_true", help="with activation checkpointing")
    i.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches a step (default 1): one device puts a step's images, up to "
                        "16, through the tower together")
    i.add_argument("--device", choices=("auto", *DEVICES), default="auto", help="device to estimate for")
    i.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    i.add_argument("--text-only", action="store_true",
                   help="estimate a text stage: the decoder alone (default: with the vision tower, if any)")
    i.add_argument("--devices", type=int, default=1, help="devices in all (a stage's devices x nodes; default 1)")
    i.add_argument("--strategy", choices=STRATEGIES, default="ddp",
                   help="ddp: every device holds everything; fsdp: weights, grads and moments split by devices")
    i.set_defaults(func=cmd_info)


def _m(n: int) -> str:
    return f"{n / 1e6:,.2f}M"


def _gib(n: int) -> str:
    return f"{n / GIB:,.2f} GiB"


def cmd_info(args: argparse.Namespace) -> int:
    cfg = preset(args.preset)
    cfg = cfg.with_vocab(args.vocab if args.vocab is not None else default_vocab(args.preset))
    seq_len = args.seq_len if args.seq_len is not None else cfg.max_seq_len
    counts = param_breakdown(cfg)
    mem = memory_estimate(
        cfg, seq_len, args.micro_batch, args.checkpointing, args.precision, args.device,
        cfg.has_vision and not args.text_only,
        args.devices, args.strategy, args.grad_accum,
    )
    console = Console()

    shape = (
        f"{args.preset}: {cfg.n_layers} layers, width {cfg.dim}, heads {cfg.n_heads}/{cfg.n_kv_heads} kv, "
        f"MLP {cfg.ffn_dim}, vocab {cfg.vocab_size:,}, {'tied' if cfg.tie_embeddings else 'untied'} embeddings"
    )
    table = Table("component", "parameters", "share", "how", title=shape)
    per_layer = (counts["attention"] + counts["mlp"]) // cfg.n_layers
    how = {
        "embedding": f"vocab {cfg.vocab_size:,} x {cfg.dim}",
        "attention": f"{cfg.n_layers} x (q,o {cfg.dim}x{cfg.dim} + k,v {cfg.dim}x{cfg.n_kv_heads * cfg.head_dim})",
        "mlp": f"{cfg.n_layers} x 3 x {cfg.dim}x{cfg.ffn_dim} (gate, up, down)",
        "norms": f"({2 * cfg.n_layers} + 1) x {cfg.dim}",
        "lm_head": "tied to the embedding" if cfg.tie_embeddings else f"{cfg.dim} x vocab {cfg.vocab_size:,}",
        "decoder": f"{_m(per_layer)} per layer without norms",
    }
    if cfg.has_vision:
        grid = cfg.image_size // cfg.patch_size
        how["vision_tower"] = (
            f"SigLIP ViT {cfg.vision_layers} x {cfg.vision_width}, {cfg.image_size} px in {cfg.patch_size} px "
            f"patches ({grid}x{grid})"
        )
        how["projector"] = (
            f"{cfg.vision_width * cfg.pixel_shuffle ** 2}->{cfg.dim}->{cfg.dim} GELU MLP, "
            f"{cfg.image_tokens} positions per image"
        )
    else:
        how["vision_tower"] = "none (text only)"
    total = counts["total"]
    if args.preset == "fc450":
        how["total"] = f"{100 * (total / 450e6 - 1):+.1f}% against the 450M target"
    keys = ("embedding", "attention", "mlp", "norms", "lm_head", "decoder", "vision_tower", "projector", "total")
    for key in keys:
        if key == "projector" and not cfg.has_vision:
            continue
        style = "bold" if key in ("decoder", "total") else None
        table.add_row(key, f"{counts[key]:,}", f"{100 * counts[key] / total:.1f}%", how.get(key, ""), style=style)
    console.print(table)

    where = mem["device"] if args.devices == 1 else f"each of {args.devices} x {mem['device']} ({args.strategy})"
    title = (
        f"training memory on {where} ({mem['precision']}), micro-batch {args.micro_batch} x {seq_len}, "
        f"activation checkpointing {'on' if args.checkpointing else 'off'}"
        + (", 1 image" if mem["params"] > counts["decoder"] else "")
    )
    split = f", split {args.devices} ways" if mem["weights"] < 4 * mem["params"] else ""
    mt = Table("part", "bytes", "size", "how", title=title)
    notes = {
        "weights": f"{_m(mem['params'])} params x 4 (fp32)"
        + (", decoder only (--text-only)" if cfg.has_vision and args.text_only else ""),
        "grads": f"x 4 (fp32){split}",
        "optimizer": f"AdamW moments, x 8 (2 x fp32){split}",
        "gathered": "whole parameters in use: embedding, lm head and two blocks, one block's grads",
        "cast_weights": ("bf16 copies made by autocast, x 2" + (": the embedding, lm head and one block"
                                                                 if args.checkpointing else ""))
        if mem["cast_weights"] else
        "none: FSDP gathers them in bf16" if mem["gathered"] and mem["precision"] == "bf16" else "none in fp32",
        "activations": ("each block's input only, one block recomputed" if args.checkpointing else "every block's")
        + (f", and the tower's for {mem['images']} image{'s' if mem['images'] > 1 else ''}"
           if mem["images"] else ""),
        "logits": f"{args.micro_batch * seq_len:,} tokens x vocab x (compute dtype + 2 x fp32)",
        "total": "peak: weights + optimizer + " + ("grads + casts + activations + logits (grads are kept "
                                                   "over a step's micro-batches)" if args.grad_accum > 1 else
                                                   "the larger of grads and (casts + activations + logits)"),
    }
    notes["weights"] += split
    for key in ("weights", "grads", "optimizer", "cast_weights", "gathered", "activations", "logits", "total"):
        if key == "gathered" and not mem[key]:
            continue
        mt.add_row(key, f"{mem[key]:,}", _gib(mem[key]), notes[key], style="bold" if key == "total" else None)
    console.print(mt)
    return 0
