"""Why do two-GPU DDP losses leave one GPU's? The trainer's DDP step, two ranks on ONE device, against
one process with twice the accumulation, on the same global batches; and one process against itself
(the run-to-run noise floor of the device's kernels).

Two ranks share the device through gloo (NCCL refuses two ranks on one GPU), so every part of the DDP
path but the NCCL transport runs as it does on two GPUs: Parallel.wrap (DDP, bucket views, per-block
compile under dynamo's DDP graph splitting), the accumulation context, Parallel.clip_grads and the
fused AdamW of build_optimizer. Variants take one of them away at a time.

    python bench/ddp_equivalence.py [--device cuda] [--steps 100] [--layers 6] [--variants ...]
    python bench/ddp_equivalence.py --device cpu --preset tiny --seq-len 64 --micro-batch 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._inductor.config  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from engine.model.config import PRESETS  # noqa: E402
from engine.model.decoder import Transformer  # noqa: E402
from engine.train import distributed  # noqa: E402
from engine.train.trainer import build_optimizer, token_losses  # noqa: E402
from train_mfu import markov_tokens  # noqa: E402

VARIANTS = {
    # name: (ranks, compile, gradient_as_bucket_view, dynamo's optimize_ddp); "-det": deterministic kernels
    "one": (1, True, True, True),
    "one-again": (1, True, True, True),
    "one-det": (1, True, True, True),
    "one-det-again": (1, True, True, True),
    "one-eager": (1, False, True, True),
    "ddp": (2, True, True, True),
    "ddp-eager": (2, False, True, True),
    "ddp-no-split": (2, True, True, False),
    "ddp-no-bucket-view": (2, True, False, True),
}


def stage(args) -> SimpleNamespace:
    return SimpleNamespace(lr=args.lr, beta1=0.9, beta2=0.95, weight_decay=0.1, grad_clip=1.0, seed=1234)


def batches(args, vocab: int) -> np.ndarray:
    """[steps, 2 * micro_batch, seq_len + 1]: step s's global batch, the same in every arm."""
    rows = args.steps * 2 * args.micro_batch
    chains = markov_tokens(vocab, rows * (args.seq_len + 1) + 4096 * 2, seed=0)
    flat = chains.reshape(-1)[: rows * (args.seq_len + 1)]
    return flat.reshape(args.steps, 2 * args.micro_batch, args.seq_len + 1).astype(np.int64)


def train(rank: int, world: int, name: str, args, out: str) -> None:
    ranks, compile_on, bucket_view, split = VARIANTS[name]
    device = torch.device(args.device)
    if "-det" in name:  # before the first cuBLAS handle: this process is fresh (spawned)
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch._inductor.config, "deterministic"):
            torch._inductor.config.deterministic = True
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{out}.rdv", rank=rank, world_size=world)
    torch._dynamo.config.optimize_ddp = split
    torch._dynamo.reset()
    cfg = replace(PRESETS[args.preset], n_layers=args.layers or PRESETS[args.preset].n_layers,
                  max_seq_len=args.seq_len, vision_layers=0).with_vocab(args.vocab)
    torch.manual_seed(1234)
    with torch.device(device):
        model = Transformer(cfg)
    par = distributed.Parallel(rank, world, 0, "ddp")
    if world > 1 and not bucket_view:  # Parallel.wrap with the one setting changed
        from torch.nn.parallel import DistributedDataParallel

        if compile_on:
            distributed.compile_blocks(model)
        net = DistributedDataParallel(model, device_ids=[0] if device.type == "cuda" else None)
    else:
        net = par.wrap(model, "bf16", compile_on)
    st = stage(args)
    dev = SimpleNamespace(type=device.type)
    opt = build_optimizer(model, st, dev)
    data = batches(args, args.vocab)
    accum = 2 // world
    losses, norms = [], []
    amp = torch.autocast(device.type, dtype=torch.bfloat16)
    for s in range(args.steps):
        total = torch.zeros((), device=device)
        for micro in range(accum):
            row = (micro * world + rank) * args.micro_batch  # engine.train.distributed.sequence_index's order
            x = torch.as_tensor(data[s, row: row + args.micro_batch]).to(device)
            with par.accumulating(net, micro == accum - 1):
                with amp:
                    loss = token_losses(net, x).mean()
                (loss / accum).backward()
            total += loss.detach()
        params = [p for p in model.parameters() if p.grad is not None]
        norm = par.clip_grads(params, st.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        both = par.sum(total[None].clone()) / 2
        losses.append(float(both))
        norms.append(float(norm))
    digest = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
    if rank == 0:
        Path(out).write_text(json.dumps({"loss": losses, "grad_norm": norms, "weights_l1": digest}))
    if world > 1:
        dist.destroy_process_group()


def run_variant(name: str, args, tmp: Path) -> dict:
    out = str(tmp / f"{name}.json")
    world = VARIANTS[name][0]
    mp.spawn(train, args=(world, name, args, out), nprocs=world, join=True)  # a fresh process for each arm
    return json.loads(Path(out).read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="fc450")
    ap.add_argument("--layers", type=int, default=6, help="blocks of the preset's width (0: the preset's)")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    names = args.variants.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="fc-ddpeq-"))
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {where}, torch {torch.__version__}; {args.preset} x {args.layers or 'all'} blocks, vocab "
          f"{args.vocab}, 2 x {args.micro_batch} x {args.seq_len} a step, {args.steps} steps, bf16 autocast")
    results = {}
    for name in names:
        results[name] = run_variant(name, args, tmp)
    ref = results[names[0]]["loss"]
    for name in names:
        got = results[name]["loss"]
        diff = np.abs(np.array(got) - np.array(ref))
        print(f"{name:20s} loss {got[0]:.4f} -> {got[-1]:.4f}; |diff vs {names[0]}| mean {diff.mean():.2e} "
              f"max {diff.max():.2e} (first step past 1e-2: {next((i + 1 for i, d in enumerate(diff) if d > 1e-2), '-')}); "
              f"max grad norm {max(results[name]['grad_norm']):.3g}", flush=True)
    for name in names:  # each arm run twice against itself: the device's run-to-run noise
        base = name.removesuffix("-again")
        if name != base and base in results:
            diff = np.abs(np.array(results[name]["loss"]) - np.array(results[base]["loss"]))
            print(f"{name} vs {base}: |diff| mean {diff.mean():.2e} max {diff.max():.2e}; weights "
                  f"{'identical' if results[name]['weights_l1'] == results[base]['weights_l1'] else 'differ'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
