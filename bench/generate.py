"""Generation tokens/s with the KV cache against recomputing the whole prefix for every token.

Both generate the same greedy tokens (checked) from the same 64-token prompt with the same
randomly initialised `stage0` model (4 layers, width 1024, vocab 8000). Prints tokens/s of each,
the ratio (cache / recompute; the target is at least 5x on CPU), the device and the versions.

    flock /tmp/bench.lock .venv/bin/python bench/generate.py [--device cpu] [--new 256] [--prompt 64]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.model.generate import SamplingConfig, generate, generate_recompute  # noqa: E402
from engine.model.decoder import Transformer  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="stage0")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--new", type=int, default=256, help="new tokens")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset].with_vocab(args.vocab)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Transformer(cfg).eval()
    prompt = torch.randint(3, args.vocab, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
    sampling = SamplingConfig(max_new_tokens=args.new)

    def timed(fn):
        fn(model, prompt, SamplingConfig(max_new_tokens=4), stop_ids=())  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(model, prompt, sampling, stop_ids=())
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    cached, t_cache = timed(generate)
    full, t_full = timed(generate_recompute)
    same = cached.tokens == full.tokens
    n = len(cached.tokens)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.preset}: {cfg.n_layers} layers x {cfg.dim}, vocab {cfg.vocab_size}; "
          f"prompt {args.prompt}, {n} new tokens")
    print(f"KV cache:  {n / t_cache:10.1f} tok/s ({t_cache:.2f} s)")
    print(f"recompute: {n / t_full:10.1f} tok/s ({t_full:.2f} s)")
    print(f"ratio cache/recompute: {t_full / t_cache:.2f}x   same tokens: {same}")
    print(f"device: {dev}; torch {torch.__version__}; python {platform.python_version()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
