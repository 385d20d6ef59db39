"""A trained run's GGUF export in llama.cpp (llama-cpp-python) against our own model.

Exports the run's latest checkpoint (f32 and q8), loads it in llama.cpp with an F32 KV cache,
and prints: the largest logit difference on held-out token ids, how many greedy tokens agree
on held-out prompts per domain, and greedy generation tokens/s of llama.cpp against our
KV-cache `generate` (same prompt, same number of tokens, one thread each unless --threads).

    flock /tmp/bench.lock .venv/bin/python bench/gguf_llama_cpp.py RUN_DIR [--new 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.eval.harness import load_heldout  # noqa: E402
from engine.export import export_run  # noqa: E402
from engine.model.generate import SamplingConfig, generate  # noqa: E402
from engine.eval.run_model import find_checkpoint, load_model, load_tokenizer  # noqa: E402
from engine.data.tokenizer import EOS_ID  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--new", type=int, default=64, help="greedy tokens per prompt")
    p.add_argument("--prompt-chars", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    from llama_cpp import GGML_TYPE_F32, Llama, __version__ as llama_version

    torch.set_num_threads(args.threads)
    ckpt = find_checkpoint(args.run_dir)
    tok = load_tokenizer(ckpt)
    model = load_model(ckpt, "cpu")
    heldout = load_heldout(ckpt.spec.shards, ckpt.spec.domains, 4)
    prompts = {d: [EOS_ID, *tok.encode(docs[0][: args.prompt_chars])] for d, docs in heldout.items()}
    print(f"run {ckpt.spec.run_id} step {ckpt.step}: {model.num_params():,} params, vocab {model.cfg.vocab_size}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("f32", "q8"):
            res = export_run(args.run_dir, "gguf", dtype, out=Path(tmp) / dtype)
            llm = Llama(str(res.path / "model.gguf"), n_ctx=model.cfg.max_seq_len, logits_all=True,
                        type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, n_threads=args.threads, verbose=False)
            worst, agree, total = 0.0, 0, 0
            ours_s = theirs_s = 0.0
            n_ours = n_theirs = 0
            for domain, ids in prompts.items():
                ids = ids[: model.cfg.max_seq_len - args.new]
                llm.reset()
                llm.eval(ids)
                theirs = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
                with torch.no_grad():
                    ours = model(torch.tensor([ids]))[0]
                worst = max(worst, (theirs - ours).abs().max().item())

                start = time.perf_counter()
                mine = generate(model, ids, SamplingConfig(args.new), stop_ids=()).tokens
                ours_s += time.perf_counter() - start
                n_ours += len(mine)
                llm.reset()
                start = time.perf_counter()
                got = []
                for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
                    got.append(t)
                    if len(got) == args.new:
                        break
                theirs_s += time.perf_counter() - start
                n_theirs += len(got)
                same = next((i for i, (a, b) in enumerate(zip(mine, got)) if a != b), min(len(mine), len(got)))
                agree += same
                total += len(mine)
                print(f"  {dtype} {domain:8s} greedy tokens equal before the first difference: {same}/{len(mine)}"
                      f"  ours: {tok.decode(mine[:12])!r}")
            print(f"{dtype}: max |logit difference| {worst:.2e} on {sum(len(v) for v in prompts.values())} prompt "
                  f"tokens; greedy agreement {agree}/{total}; generation {n_ours / ours_s:.1f} tok/s ours vs "
                  f"{n_theirs / theirs_s:.1f} tok/s llama.cpp = {n_ours / ours_s / (n_theirs / theirs_s):.2f}x")
            llm.close()
    print(f"device: CPU ({args.threads} threads), {platform.processor() or platform.machine()}; torch {torch.__version__}, "
          f"llama-cpp-python {llama_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
