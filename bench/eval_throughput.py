"""Eval throughput: held-out tokens scored per second by the eval harness against the training
forward pass alone on the same number of tokens.

The harness path (engine.eval.harness.score_domains) reads documents as text, encodes them with
SentencePiece, cuts windows after an EOS, pads batches and sums the per-token NLL. The baseline
is the trainer's forward (train mode, autograd on, `model.loss`) on full [batch, window] rows of
the same token count; a no-grad forward is printed too. A tokenizer (vocab 8000) is trained on
built-in text first; documents come from the built-in sources with another seed.

    flock /tmp/bench.lock .venv/bin/python bench/eval_throughput.py [--preset tiny] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.data.builtin import iter_builtin  # noqa: E402
from engine.eval.harness import EvalLimits, ModelLM, score_domains  # noqa: E402
from engine.model.decoder import Transformer  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.data.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

SOURCES = {"code": "python-stdlib", "science": "science-docs", "chess": "chess-games", "data": "data-notebooks",
           "chat": "chat"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--tokens", type=int, default=16384, help="held-out tokens per domain")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for d, src in SOURCES.items():
            with open(raw / f"{d}.jsonl", "w", encoding="utf-8") as fh:
                for text in iter_builtin(src, 1, 300_000):
                    fh.write(json.dumps({"text": text, "source": src}) + "\n")
        train_tokenizer(raw, Path(tmp) / "t.model", list(SOURCES), vocab_size=args.vocab, sample_chars=1_500_000)
        tok = Tokenizer.load(Path(tmp) / "t.model")
    heldout = {d: list(iter_builtin(src, 99, args.tokens * 6)) for d, src in SOURCES.items()}

    cfg = PRESETS[args.preset].with_vocab(tok.vocab_size)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Transformer(cfg)
    limits = EvalLimits(bpb_docs=10_000, bpb_tokens=args.tokens, batch=args.batch, window=args.window)
    lm = ModelLM(model.eval(), tok, args.batch)
    score_domains(lm, {d: docs[:1] for d, docs in heldout.items()}, EvalLimits(bpb_tokens=256, window=args.window))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    start = time.perf_counter()
    scores = score_domains(lm, heldout, limits)
    sync()
    t_eval = time.perf_counter() - start
    n_tokens = sum(s.tokens for s in scores.values())

    rows = -(-n_tokens // args.window)
    x = torch.randint(3, tok.vocab_size, (args.batch, args.window + 1), device=args.device)
    model.train()
    model.loss(x[:, :-1], x[:, 1:])  # warm-up
    start = time.perf_counter()
    for _ in range(-(-rows // args.batch)):
        loss = model.loss(x[:, :-1], x[:, 1:])
        del loss
    sync()
    t_train = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(-(-rows // args.batch)):
            model(x[:, :-1])
    sync()
    t_infer = time.perf_counter() - start
    base_tokens = -(-rows // args.batch) * args.batch * args.window

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.preset}: {cfg.n_layers} layers x {cfg.dim}, vocab {cfg.vocab_size}; "
          f"window {args.window}, batch {args.batch}")
    print(f"eval harness:             {n_tokens / t_eval:10.0f} held-out tok/s ({n_tokens} tokens, "
          f"{sum(s.bytes for s in scores.values())} bytes, {t_eval:.2f} s)")
    print(f"training forward (loss):  {base_tokens / t_train:10.0f} tok/s ({base_tokens} tokens, {t_train:.2f} s)")
    print(f"no-grad forward (logits): {base_tokens / t_infer:10.0f} tok/s")
    print(f"ratio eval / training forward: {(n_tokens / t_eval) / (base_tokens / t_train):.2f}x   "
          f"eval / no-grad forward: {(n_tokens / t_eval) / (base_tokens / t_infer):.2f}x")
    print(f"device: {dev}; torch {torch.__version__}; python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
