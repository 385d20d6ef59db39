"""fc450's training step on one GPU: the trainer's own step (engine.train.trainer.Trainer.train_step on
a real run folder) beside transformers' LlamaForCausalLM eager and compiled on the same shape and batch.

Prints tokens/s, MFU against the datasheet and against the bf16 matmul rate measured in the same
run, and peak memory, with the device. Variants switch one lever at a time; `--loss-steps N` trains
bf16 and fp8 N steps on the same data and compares their final losses; `--memory` measures every
fc450 stage's peak beside `fcwork model info`'s estimate.

    python bench/train_mfu.py --variants ours,hf-eager,hf-compiled --vocab 8000
    python bench/train_mfu.py --variants ours-before,ours,ours-fp8-rowwise --vocab 50000
    python bench/train_mfu.py --loss-steps 300 --variants ours,ours-fp8-tensorwise
    python bench/train_mfu.py --memory
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tomli_w  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.data.shards import ShardWriter  # noqa: E402
from engine.jobs.events import EventWriter  # noqa: E402
from engine.model import decoder  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.profile import StageConfig, load_profile  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HASH = "b" * 64  # the synthetic shards' tokenizer hash; no tokenizer is loaded (no evals)


# -- data: a Markov "language" with something to learn ---------------------------------------

def markov_tokens(vocab: int, n_tokens: int, seed: int = 0, fanout: int = 8) -> np.ndarray:
    """Tokens from a random sparse transition table (each token has `fanout` Zipf-weighted
    successors): the loss falls from ln(vocab) towards the chain's entropy, so fp8 and bf16 can be
    compared on learning, not on noise. 4096 chains walk in parallel, vectorised."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(1, vocab, size=(vocab, fanout))
    p = 1.0 / np.arange(1, fanout + 1)
    cdf = np.cumsum(p / p.sum())
    chains, length = 4096, -(-n_tokens // 4096)
    out = np.empty((length, chains), dtype=np.uint32)
    cur = rng.integers(1, vocab, size=chains)
    for t in range(length):
        out[t] = cur
        pick = np.searchsorted(cdf, rng.random(chains))
        cur = succ[cur, pick]
    return out.T  # [chains, length]: one document a chain


def make_run(root: Path, name: str, vocab: int, stage: dict) -> Path:
    """A run folder the trainer accepts: one domain's shard of Markov tokens and a frozen stage."""
    shards = root / f"shards-{vocab}"
    if not (shards / "text.bin").exists():
        docs = markov_tokens(vocab, 16_000_000)
        with ShardWriter(shards / "text", vocab, HASH, eos_id=0) as w:
            w.add_encoded(docs.reshape(-1), np.full(docs.shape[0], docs.shape[1]))
    st = StageConfig(name="bench", **stage)
    table = asdict(st)
    table["model"] = asdict(st.model_config(vocab))
    run = root / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    doc = {"run": {"id": name, "profile": "bench", "stage": "bench"},
           "paths": {"tokenizer": str(root / "none.model"), "tokenizer_hash": HASH, "shards": str(shards),
                     "init_from": ""},
           "stage": table, "mix": {"text": 1.0}}
    (run / "stage.toml").write_text(tomli_w.dumps(doc))
    return run


# -- the levers: each variant is the trainer with one thing changed -------------------------

def _fp32_residual():
    decoder.to_compute_dtype = lambda x: x


def _liger():
    """liger-kernel's fused RMSNorm and SwiGLU in place of the compiled torch ones."""
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction

    def norm(self, x):
        return LigerRMSNormFunction.apply(x, self.weight, self.eps, 0.0, "llama")

    def mlp(self, x):
        return self.down_proj(LigerSiLUMulFunction.apply(self.gate_proj(x), self.up_proj(x)))

    decoder.RMSNorm.forward, decoder.MLP.forward = norm, mlp


def _gqa_expand():
    """Key/value heads repeated to the query heads before attention (no enable_gqa)."""
    decoder._NATIVE_GQA = False


def _cudnn():
    """Expanded key/value heads, and SDPA left with cuDNN's attention (flash and efficient off)."""
    _gqa_expand()
    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)


def _compiled_loss():
    """The loss as plain F.cross_entropy over float32 logits, compiled: Inductor fuses the upcast,
    log-softmax and their backward (the trainer's eager custom function is the faster one on the CPU)."""
    from engine.model.decoder import IGNORE

    def loss(logits, targets):
        return F.cross_entropy(logits.float(), targets, reduction="none", ignore_index=IGNORE)

    decoder.cross_entropy = torch.compile(loss)  # what the trainer's token_losses calls


def _max_autotune():
    orig = torch.nn.Module.compile
    decoder.Block.compile = lambda self, **kw: orig(self, mode="max-autotune-no-cudagraphs")


VARIANTS = {  # name: (stage overrides, patch applied before the trainer builds its model)
    "ours": ({}, None),
    "ours-fp32-residual": ({}, _fp32_residual),  # the residual stream as it was before (float32)
    "ours-gqa-expand": ({}, _gqa_expand),
    "ours-cudnn": ({}, _cudnn),
    "ours-log10": ({"log_every": 10}, None),
    "ours-compiled-loss": ({}, _compiled_loss),
    "ours-best": ({"log_every": 10, "micro_batch": 32}, _compiled_loss),
    "ours-liger": ({}, _liger),
    "ours-max-autotune": ({}, _max_autotune),
    "ours-whole-compile": ({"compile": "off"}, "whole"),  # the whole model as one graph (as it was before)
    "ours-mb32": ({"micro_batch": 32}, None),
    "ours-ckpt": ({"activation_checkpointing": True}, None),
    "ours-fp8-tensorwise": ({"precision": "fp8", "fp8_recipe": "tensorwise"}, None),
    "ours-fp8-rowwise": ({"precision": "fp8", "fp8_recipe": "rowwise"}, None),
}


@contextlib.contextmanager
def patched(patch):
    eager_loss = decoder.cross_entropy
    saved = (decoder._NATIVE_GQA, decoder.to_compute_dtype, decoder.RMSNorm.forward, decoder.MLP.forward,
             decoder.Block.__dict__.get("compile"))
    try:
        if callable(patch):
            patch()
        yield
    finally:
        decoder._NATIVE_GQA, decoder.to_compute_dtype, decoder.RMSNorm.forward, decoder.MLP.forward = saved[:4]
        if saved[4] is None and "compile" in decoder.Block.__dict__:
            del decoder.Block.compile
        decoder.cross_entropy = eager_loss
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(True)


def run_ours(root: Path, name: str, vocab: int, base: dict, args) -> dict:
    over, patch = VARIANTS[name]
    stage = {**base, **over}
    run = make_run(root, f"{name}-{vocab}-{int(time.time() * 1000)}", vocab, stage)
    with patched(patch):
        trainer = Trainer(run, EventWriter(run / "events.jsonl"))
        trainer.setup()
        if patch == "whole":
            trainer.model.compile()
        timed = time_steps(trainer.run_until, args.warmup, args.steps)
        flops, tokens = trainer.flops_per_token, trainer.tokens_per_step
        trainer.close()
    return {**timed, "tokens_per_step": tokens, "flops_per_token": flops, "loss": step_losses(run)[-1]}


def step_losses(run: Path) -> list[float]:
    """The losses of the run's step events, in order."""
    events = (json.loads(line) for line in (run / "events.jsonl").read_text().splitlines())
    return [e["loss"] for e in events if e.get("type") == "step"]


def run_hf(root: Path, name: str, vocab: int, base: dict, args) -> dict:
    import transformers

    from engine.model.hf_names import hf_config_dict

    cfg = PRESETS[base["model"]].with_vocab(vocab)
    torch.manual_seed(0)
    hcfg = transformers.LlamaConfig(**hf_config_dict(cfg), attn_implementation="sdpa")
    hf = transformers.LlamaForCausalLM(hcfg).cuda()
    hf.config.use_cache = False
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    net = torch.compile(hf) if name == "hf-compiled" else hf
    mb, seq = base["micro_batch"], base["seq_len"]
    tokens = markov_tokens(vocab, mb * (seq + 1) * 8, seed=1).reshape(-1)[:8 * mb * (seq + 1)].reshape(8, mb, seq + 1)
    batches = [torch.as_tensor(b.astype(np.int64)).cuda() for b in tokens]

    def step(s):
        x = batches[s % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = net(input_ids=x[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    done = [0]

    def run_until(last):
        while done[0] < last:
            done[0] += 1
            step(done[0])

    timed = time_steps(run_until, args.warmup, args.steps)
    matmul = sum(p.numel() for n, p in hf.named_parameters() if "embed_tokens" not in n and p.dim() == 2)
    flops = 6 * matmul + 12 * cfg.n_layers * cfg.dim * seq
    del hf, opt, net
    return {**timed, "tokens_per_step": mb * seq, "flops_per_token": flops}


def time_steps(run_until, warmup: int, steps: int) -> dict:
    """Seconds per step over `steps` after `warmup` (compilation included there), and the peak memory;
    `run_until(n)` trains through step n."""
    t0 = time.perf_counter()
    run_until(warmup)
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run_until(warmup + steps)
    torch.cuda.synchronize()
    return {"step_s": (time.perf_counter() - t0) / steps, "warmup_s": warm,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def matmul_rate() -> float:
    """Measured dense bf16 matmul FLOP/s (8192^3, the best of several timings)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 20)
    return 2 * 8192**3 / best


def cleanup() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch._dynamo.reset()


def speed(args, root: Path, out: list) -> None:
    from engine.train.device import peak_flops

    name = torch.cuda.get_device_name()
    peak, measured = peak_flops(name, "bf16") or 989e12, matmul_rate()
    print(f"device: {name}, torch {torch.__version__}; bf16 matmul measured {measured / 1e12:.0f} TFLOP/s "
          f"(datasheet {peak / 1e12:.0f})", flush=True)
    base = {"model": args.preset, "seq_len": args.seq_len, "micro_batch": args.micro_batch, "grad_accum": 1,
            "max_steps": 100_000, "warmup_steps": 10, "lr": 3e-4, "eval_every": 0, "checkpoint_every": 100_000,
            "device": "cuda", "precision": "bf16", "compile": "on", "log_every": args.log_every}
    for vocab in args.vocab:
        for name_ in args.variants:
            fn = run_hf if name_.startswith("hf-") else run_ours
            try:
                r = fn(root, name_, vocab, base, args)
            except Exception as exc:  # a lever that cannot run here is reported, not fatal
                print(f"{name_:22s} vocab {vocab}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                      flush=True)
                cleanup()
                continue
            tps = r["tokens_per_step"] / r["step_s"]
            r.update(variant=name_, vocab=vocab, tokens_per_s=tps, mfu=tps * r["flops_per_token"] / peak,
                     mfu_measured=tps * r["flops_per_token"] / measured, device=name)
            out.append(r)
            print(f"{name_:22s} vocab {vocab}: {tps:10,.0f} tok/s  MFU {100 * r['mfu']:5.1f}% "
                  f"(of measured matmul {100 * r['mfu_measured']:5.1f}%)  peak {r['peak_gib']:6.2f} GiB  "
                  f"warmup {r['warmup_s']:5.1f} s", flush=True)
            cleanup()


def loss_compare(args, root: Path, out: list) -> None:
    """bf16 against fp8 on the same data for `loss_steps` steps: the mean loss of the last 20."""
    base = {"model": args.preset, "seq_len": args.seq_len, "micro_batch": args.micro_batch, "grad_accum": 1,
            "max_steps": args.loss_steps, "warmup_steps": 30, "lr": 1e-3, "eval_every": 0,
            "checkpoint_every": 100_000, "device": "cuda", "precision": "bf16", "compile": "on"}
    for vocab in args.vocab:
        ref = None
        for name_ in args.variants:
            over, patch = VARIANTS[name_]
            run = make_run(root, f"loss-{name_}-{vocab}-{int(time.time() * 1000)}", vocab, {**base, **over})
            with patched(patch):
                trainer = Trainer(run, EventWriter(run / "events.jsonl"))
                trainer.setup()
                t0 = time.perf_counter()
                trainer.run_until(args.loss_steps)
                torch.cuda.synchronize()
                took = time.perf_counter() - t0
                trainer.close()
            losses = step_losses(run)
            final = float(np.mean(losses[-20:]))
            ref = final if ref is None else ref
            out.append({"variant": name_, "vocab": vocab, "loss_steps": args.loss_steps, "final_loss": final,
                        "first_loss": losses[0], "seconds": took})
            print(f"{name_:22s} vocab {vocab}: loss {losses[0]:.3f} -> {final:.4f} (mean of last 20 of "
                  f"{args.loss_steps}; {100 * (final / ref - 1):+.2f}% vs first variant) in {took:.0f} s", flush=True)
            cleanup()


def memory(args, root: Path, out: list) -> None:
    """Every fc450 stage's trainer step at its micro-batch, with and without checkpointing, beside
    `fcwork model info`'s estimate (measured / estimate)."""
    from engine.model.info import memory_estimate

    profile = load_profile(REPO / "profiles" / "fc450.toml")
    seen = set()
    for st in profile.stages:
        for ckpt in (False, True):
            key = (str(st.model), st.seq_len, st.micro_batch, ckpt)
            if key in seen:
                continue
            seen.add(key)
            # Two micro-batches a step: from the second on the gradients are there during the forward, the
            # peak of every stage that accumulates (each fc450 stage does).
            stage = {"model": st.model, "seq_len": st.seq_len, "micro_batch": st.micro_batch, "grad_accum": 2,
                     "max_steps": 1000, "warmup_steps": 10, "eval_every": 0, "checkpoint_every": 100_000,
                     "device": "cuda", "precision": "bf16", "compile": "on", "activation_checkpointing": ckpt}
            run = make_run(root, f"mem-{st.name}-{ckpt}-{int(time.time() * 1000)}", args.vocab[0], stage)
            trainer = Trainer(run, EventWriter(run / "events.jsonl"))
            trainer.setup()
            timed = time_steps(trainer.run_until, 2, 2)
            trainer.close()
            del trainer
            cfg = StageConfig(name="x", **stage).model_config(args.vocab[0])
            est = memory_estimate(cfg, st.seq_len, st.micro_batch, ckpt, "bf16", "cuda", grad_accum=2)["total"] / 2**30
            out.append({"stage": st.name, "checkpointing": ckpt, "peak_gib": timed["peak_gib"], "estimate_gib": est})
            print(f"memory {st.name:7s} ({st.model}, {st.micro_batch}x{st.seq_len}, checkpointing {ckpt!s:5s}): "
                  f"peak {timed['peak_gib']:6.2f} GiB, estimate {est:6.2f} GiB, ratio {timed['peak_gib'] / est:.2f}",
                  flush=True)
            cleanup()


KERNEL_KINDS = (  # GPU kernel name fragments -> what they do, first match wins
    ("attention", ("flash", "fmha", "attention", "cudnn")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "sm90_")),
    ("optimizer", ("multi_tensor", "adam")),
    ("fused elementwise (triton)", ("triton",)),
    ("loss/softmax", ("softmax", "nll", "log_softmax", "cross_entropy")),
)


def profile(args, root: Path, out: list) -> None:
    """Where a step's GPU time goes for the first variant: kernel time by kind, and how busy the GPU is."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    name_ = args.variants[0]
    over, patch = VARIANTS[name_]
    base = {"model": args.preset, "seq_len": args.seq_len, "micro_batch": args.micro_batch, "grad_accum": 1,
            "max_steps": 100_000, "warmup_steps": 10, "eval_every": 0, "checkpoint_every": 100_000,
            "device": "cuda", "precision": "bf16", "compile": "on", "log_every": args.log_every}
    run = make_run(root, f"prof-{name_}-{int(time.time() * 1000)}", args.vocab[0], {**base, **over})
    steps = 3
    with patched(patch):
        trainer = Trainer(run, EventWriter(run / "events.jsonl"))
        trainer.setup()
        trainer.run_until(args.warmup)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            trainer.run_until(args.warmup + steps)
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / steps
        trainer.close()
    kinds: dict[str, float] = {}
    for e in prof.key_averages():
        if e.device_type != DeviceType.CUDA:
            continue
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        low = e.key.lower()
        kind = next((k for k, frags in KERNEL_KINDS if any(f in low for f in frags)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e6 / steps
    busy = sum(kinds.values())
    print(f"profile {name_} vocab {args.vocab[0]}: GPU busy {busy * 1e3:.1f} ms of a {wall * 1e3:.1f} ms step "
          f"(under the profiler)", flush=True)
    for kind, secs in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:28s} {secs * 1e3:7.1f} ms  {100 * secs / busy:5.1f}%", flush=True)
    out.append({"variant": name_, "vocab": args.vocab[0], "step_s": wall, "busy_s": busy, "kinds": kinds})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="ours,hf-eager,hf-compiled",
                    help=f"comma-separated: hf-eager, hf-compiled, {', '.join(VARIANTS)}")
    ap.add_argument("--vocab", default="8000", help="comma-separated vocabulary sizes")
    ap.add_argument("--preset", default="fc450")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=1, help="the stage's log_every (1 syncs every step)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--loss-steps", type=int, default=0)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--profile", action="store_true", help="kernel time by kind for the first variant")
    ap.add_argument("--workdir", default="")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    args.vocab = [int(v) for v in args.vocab.split(",")]
    for v in args.variants:
        if v not in VARIANTS and v not in ("hf-eager", "hf-compiled"):
            ap.error(f"--variants: unknown {v!r}")
    if not torch.cuda.is_available():
        print("train_mfu: needs a CUDA GPU", file=sys.stderr)
        return 2
    os.environ.setdefault("FCWORK_TRAIN_THREADS", "0")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="fc-mfu-"))
    out: list = []
    if args.memory:
        memory(args, root, out)
    elif args.profile:
        profile(args, root, out)
    elif args.loss_steps:
        loss_compare(args, root, out)
    else:
        speed(args, root, out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
