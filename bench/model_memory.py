"""Peak training memory measured on CUDA against engine.model.info.memory_estimate (the figure the queue shows).

For each case: build the model, run AdamW steps with bf16 autocast (fp32 on cpu), read
torch.cuda.max_memory_allocated over a step after the first, and print it beside the
estimate and their ratio (measured / estimate; below 1 means the estimate is on the safe side).

    python bench/model_memory.py            # needs a CUDA device
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.model.decoder import Transformer  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.model.info import memory_estimate  # noqa: E402

CASES = (  # preset, vocab, seq_len, micro_batch, activation checkpointing
    ("tiny", 8000, 256, 16, False),
    ("stage0", 50000, 2048, 4, False),
    ("stage0", 50000, 2048, 4, True),
    ("fc450", 50000, 2048, 1, False),
    ("fc450", 50000, 2048, 1, True),
    ("fc450", 50000, 2048, 4, True),
)
GIB = 1024**3


def measure(preset: str, vocab: int, seq_len: int, micro_batch: int, ckpt: bool) -> tuple[int, int]:
    """Peak bytes allocated over a step, and bytes held before it (weights + AdamW moments)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = Transformer(PRESETS[preset].with_vocab(vocab)).cuda()
    model.set_activation_checkpointing(ckpt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, vocab, (micro_batch, seq_len + 1), device="cuda")
    for i in range(3):
        if i == 2:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, opt, x, loss
    return peak, before


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    if not torch.cuda.is_available():
        print("model_memory: needs a CUDA device", file=sys.stderr)
        return 1
    print(f"device: cuda ({torch.cuda.get_device_name()}); torch {torch.__version__}; bf16 autocast, AdamW")
    print(f"{'case':40} {'measured':>10} {'estimate':>10} {'ratio':>6}   step's own (grads, activations, logits)")
    for preset, vocab, seq_len, mb, ckpt in CASES:
        est = memory_estimate(PRESETS[preset].with_vocab(vocab), seq_len, mb, ckpt, "bf16", "cuda")
        peak, before = measure(preset, vocab, seq_len, mb, ckpt)
        own_est = est["total"] - est["weights"] - est["optimizer"]
        case = f"{preset} vocab {vocab} {mb}x{seq_len} ckpt {'on' if ckpt else 'off'}"
        print(f"{case:40} {peak / GIB:8.2f}Gi {est['total'] / GIB:8.2f}Gi {peak / est['total']:6.2f}"
              f"   measured {(peak - before) / GIB:.2f}Gi, estimate {own_est / GIB:.2f}Gi, "
              f"ratio {(peak - before) / own_est:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
