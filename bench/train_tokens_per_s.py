"""Training tokens/s of our decoder against transformers' LlamaForCausalLM of the same shape and weights.

Both run the same step (forward, float32 cross-entropy, backward, AdamW) on the same batch;
rounds alternate between the two so machine noise hits both alike. Prints ours, the
baseline, the ratio (ours / baseline), the device and the versions.

    flock /tmp/bench.lock .venv/bin/python bench/train_tokens_per_s.py [--device cpu] [--rounds 6]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.model.hf_names import hf_config_dict, state_dict_to_hf  # noqa: E402
from engine.model.decoder import Transformer  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402


def build(args: argparse.Namespace):
    """Our model and an HF Llama holding the same weights, each with its own AdamW."""
    import transformers

    cfg = PRESETS[args.preset].with_vocab(args.vocab)
    torch.manual_seed(0)
    ours = Transformer(cfg).to(args.device)
    hcfg = transformers.LlamaConfig(**hf_config_dict(cfg), attn_implementation=args.attn)
    hf = transformers.LlamaForCausalLM(hcfg).to(args.device)
    hf.load_state_dict(state_dict_to_hf(ours.state_dict()), strict=not cfg.tie_embeddings)
    hf.config.use_cache = False

    def ours_loss(x, y):
        return ours.loss(x, y)

    def hf_loss(x, y):
        logits = hf(input_ids=x, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    def optimizer(model):
        return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

    return cfg, {"ours": (ours, ours_loss, optimizer(ours)), "transformers": (hf, hf_loss, optimizer(hf))}


def step(model, loss_fn, opt, x, y, autocast: bool) -> float:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()  # a sync point on accelerators


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="transformers attention")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on cpu (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    cfg, runs = build(args)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq_len + 1), generator=g).to(args.device)
    x, y = batch[:, :-1], batch[:, 1:]
    tokens = args.micro_batch * args.seq_len

    for name, (model, loss_fn, opt) in runs.items():
        for _ in range(args.warmup):
            step(model, loss_fn, opt, x, y, args.bf16)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            model, loss_fn, opt = runs[name]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, loss_fn, opt, x, y, args.bf16)
            rates[name].append(tokens * args.steps / (time.perf_counter() - t0))

    ours, base = statistics.median(rates["ours"]), statistics.median(rates["transformers"])
    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name()})"
    else:
        device += f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"preset {args.preset}, vocab {args.vocab}, micro-batch {args.micro_batch} x {args.seq_len}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, AdamW, {args.rounds} rounds x {args.steps} steps")
    print(f"device: {device}; torch {torch.__version__}; transformers {transformers.__version__} ({args.attn})")
    print(f"ours:         {ours:10,.0f} tokens/s  (rounds: {', '.join(f'{v:,.0f}' for v in rates['ours'])})")
    print(f"transformers: {base:10,.0f} tokens/s  (rounds: {', '.join(f'{v:,.0f}' for v in rates['transformers'])})")
    print(f"ratio ours/transformers: {ours / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
