"""Greedy generation tokens/s, ours (KV cache) against transformers' LlamaForCausalLM.generate.

Both hold the same random `stage0` weights (4 layers, width 1024, vocab 8000), start from the same
64-token prompt and produce 256 new tokens greedily with their KV caches (checked equal). Prints
tokens/s of each, the ratio (ours / transformers), the device and the versions.

    flock /tmp/bench.lock .venv/bin/python bench/generate_vs_hf.py [--device cpu] [--rounds 3]
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
import transformers  # noqa: E402

from engine.model.generate import SamplingConfig, generate  # noqa: E402
from engine.model.hf_names import hf_config_dict, state_dict_to_hf  # noqa: E402
from engine.model.decoder import Transformer  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="stage0")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset].with_vocab(args.vocab)
    torch.manual_seed(0)
    with torch.device(args.device):
        ours = Transformer(cfg).eval()
    hcfg = transformers.LlamaConfig(**hf_config_dict(cfg), attn_implementation="sdpa")
    hf = transformers.LlamaForCausalLM(hcfg).to(args.device).eval()
    hf.load_state_dict(state_dict_to_hf(ours.state_dict()), strict=not cfg.tie_embeddings)
    hf.generation_config.pad_token_id = hf.generation_config.eos_token_id
    prompt = torch.randint(3, args.vocab, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def run_ours(n: int) -> list[int]:
        return generate(ours, prompt, SamplingConfig(max_new_tokens=n), stop_ids=()).tokens

    def run_hf(n: int) -> list[int]:
        x = torch.tensor([prompt], device=args.device)
        with torch.no_grad():
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, use_cache=True)
        return out[0, len(prompt):].tolist()

    def timed(fn) -> tuple[list[int], float]:
        fn(4)  # warm-up
        times, toks = [], []
        for _ in range(args.rounds):
            sync()
            start = time.perf_counter()
            toks = fn(args.new)
            sync()
            times.append(time.perf_counter() - start)
        return toks, statistics.median(times)

    a, ta = timed(run_ours)
    b, tb = timed(run_hf)
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.preset}: {cfg.n_layers} layers x {cfg.dim}, vocab {cfg.vocab_size}; prompt {args.prompt}, "
          f"{args.new} new tokens, greedy; median of {args.rounds}")
    print(f"ours {len(a) / ta:8.1f} tok/s | transformers {len(b) / tb:8.1f} tok/s | ratio {tb / ta:.2f}x | "
          f"greedy tokens equal for the first {same}/{len(a)}")
    print(f"device: {dev}, {platform.machine()}; torch {torch.__version__}, transformers {transformers.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
