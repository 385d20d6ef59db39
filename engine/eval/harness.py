"""Eval harness: held-out bits per byte per domain, domain probes, sample generations -> evals.jsonl.

`eval_run(run_dir, step)` evaluates one checkpoint of a run and appends a record to
`runs/<id>/evals.jsonl`; `evaluate_model(model, tokenizer, heldout, limits)` is the same on a
model in memory, for the trainer to call every `eval_every` steps.

Bits per byte (tokenizer-independent, so runs with different tokenizers compare): held-out
documents are read as text, encoded, each scored after an EOS (the document boundary the model
saw in training) in non-overlapping windows of the context length; the sum of the token NLLs in
nats over ln 2 times the UTF-8 bytes of the scored text.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.errors import FcError, RunError
from engine.jobs.rundir import RunDir
from engine.eval.probes import PROBES, Completion, ProbeResult, probe_module, versions

BPB_VERSION = 1


@dataclass
class EvalLimits:
    """How much held-out data each part of the eval uses; the defaults take seconds for `tiny` on a CPU."""

    bpb_docs: int = 16         # held-out documents per domain
    bpb_tokens: int = 8192     # tokens per domain at most
    batch: int = 8             # rows per forward pass
    window: int = 0            # context per scored window (0: the model's max_seq_len)
    chess: int = 16            # items per probe
    code: int = 8
    data: int = 8
    science: int = 16
    chat: int = 12             # chat questions (3 kinds in turn); skipped for runs without chat text
    samples: int = 1           # sample generations per domain
    sample_tokens: int = 48
    probes: tuple[str, ...] = PROBES
    seed: int = 0

    @classmethod
    def during_training(cls) -> "EvalLimits":
        """The smaller set the trainer runs every `eval_every` steps: about half the items, shorter samples."""
        return cls(bpb_docs=8, bpb_tokens=4096, chess=8, code=4, data=4, science=8, chat=6, samples=1,
                   sample_tokens=32)

    def check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value < 0:
                raise FcError(f"eval limits: {f.name}: expected a non-negative integer, got {value}")
        if self.batch < 1:
            raise FcError(f"eval limits: batch: expected a positive integer, got {self.batch}")
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise FcError(f"eval limits: probes: {unknown[0]!r} is not a probe (expected some of {', '.join(PROBES)})")


@dataclass
class DomainScore:
    """Held-out scoring of one domain."""

    docs: int = 0
    tokens: int = 0
    bytes: int = 0
    nats: float = 0.0

    @property
    def loss(self) -> float:
        return self.nats / self.tokens if self.tokens else float("nan")

    @property
    def bpb(self) -> float:
        return self.nats / (math.log(2) * self.bytes) if self.bytes else float("nan")


@dataclass
class EvalReport:
    """Everything one evaluation measured."""

    domains: dict[str, DomainScore]
    probes: dict[str, ProbeResult]
    samples: dict[str, list[dict]]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        scored = {d: s for d, s in self.domains.items() if s.tokens}
        nats = sum(s.nats for s in scored.values())
        tokens = sum(s.tokens for s in scored.values())
        nbytes = sum(s.bytes for s in scored.values())
        return {
            "loss": nats / tokens if tokens else None,
            "bpb": nats / (math.log(2) * nbytes) if nbytes else None,
            "domain_loss": {d: s.loss for d, s in scored.items()},
            "domain_bpb": {d: s.bpb for d, s in scored.items()},
            "domain_tokens": {d: s.tokens for d, s in scored.items()},
            "domain_bytes": {d: s.bytes for d, s in scored.items()},
            "probes": {name: {**p.metrics, "n": p.n} for name, p in self.probes.items()},
        }


# -- held-out text ------------------------------------------------------------------------------

def heldout_dir(shards: Path) -> Path:
    """data/<profile>/raw/heldout/ beside a run's shard folder data/<profile>/tok/."""
    return shards.parent / "raw" / "heldout"


def read_heldout(raw_heldout: Path, domain: str, limit: int) -> list[str]:
    """Up to `limit` held-out documents of a domain, in file order ([] when the file is absent)."""
    path = raw_heldout / f"{domain}.jsonl"
    if not path.exists():
        return []
    docs = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if len(docs) >= limit:
                break
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError):
                raise FcError(f"{path}: line {n}: expected a JSON object with a \"text\" string") from None
            if isinstance(text, str) and text:
                docs.append(text)
    return docs


def load_heldout(shards: Path, domains: Sequence[str], limit: int) -> dict[str, list[str]]:
    """Held-out documents per domain (domains without held-out text are left out)."""
    docs = {d: read_heldout(heldout_dir(shards), d, limit) for d in domains}
    return {d: texts for d, texts in docs.items() if texts}


# -- the model side --------------------------------------------------------------------------------

class ModelLM:
    """A Transformer and its tokenizer behind the probes' LanguageModel interface."""

    def __init__(self, model, tokenizer, batch: int = 8) -> None:
        self.model = model
        self.tok = tokenizer
        self.batch = batch
        self.eos = tokenizer.eos_id
        self.device = next(model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def complete(self, prompt: str, max_new_tokens: int, stop: Callable[[str], bool] | None = None,
                 sampling=None) -> Completion:
        """Greedy (or `sampling`) continuation after EOS + prompt, decoded; `stop` sees the text so far."""
        from engine.model.generate import GREEDY, SamplingConfig, generate

        cfg = sampling or GREEDY
        cfg = SamplingConfig(max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed)
        out = generate(self.model, [self.eos, *self.encode(prompt)], cfg, stop_ids=(self.eos,),
                       stop=self._stop_test(stop))
        return Completion(self.tok.decode(out.tokens), out.reason)

    def complete_many(self, prompts: Sequence[str], max_new_tokens: int,
                      stops: Sequence[Callable[[str], bool] | None], sampling=None) -> list[Completion]:
        """`complete` for each prompt, `batch` at a time through one batched generation (the same
        tokens as one by one); with `sampling`, prompt i is sampled with seed sampling.seed + i."""
        from engine.model.generate import GREEDY, SamplingConfig, generate_batch

        base = sampling or GREEDY
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch):
            chunk = range(start, min(start + self.batch, len(prompts)))
            cfg = SamplingConfig(max_new_tokens, base.temperature, base.top_k, base.top_p, base.seed + start)
            tests = [self._stop_test(stops[i]) for i in chunk]
            gens = generate_batch(self.model, [[self.eos, *self.encode(prompts[i])] for i in chunk], cfg,
                                  stop_ids=(self.eos,), stops=tests)
            out += [Completion(self.tok.decode(g.tokens), g.reason) for g in gens]
        return out

    def _stop_test(self, stop: Callable[[str], bool] | None) -> Callable[[list[int]], bool] | None:
        return (lambda ids: stop(self.tok.decode(ids))) if stop else None

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after EOS + context (context cut from the left)."""
        window = self.model.cfg.max_seq_len
        rows = []
        for context, continuation in pairs:
            cont = self.encode(continuation)[: window - 1]
            ctx = [self.eos, *self.encode(context)][-(window + 1 - len(cont)):]
            ids = ctx + cont
            rows.append((ids[:-1], ids[1:], len(ids) - 1 - len(cont)))
        nll = self.nll_rows(rows)
        return [-x for x in nll]

    def nll_rows(self, rows: list[tuple[list[int], list[int], int]]) -> list[float]:
        """Summed NLL of targets[first:] for each (inputs, targets, first) row, in padded batches."""
        import torch

        from engine.model.decoder import IGNORE

        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        out = [0.0] * len(rows)
        with torch.no_grad():
            for start in range(0, len(order), self.batch):
                group = order[start:start + self.batch]
                width = max(len(rows[i][0]) for i in group)
                x = torch.full((len(group), width), self.eos, dtype=torch.long)
                y = torch.full((len(group), width), IGNORE, dtype=torch.long)
                for r, i in enumerate(group):
                    inputs, targets, first = rows[i]
                    x[r, :len(inputs)] = torch.tensor(inputs)
                    y[r, first:len(targets)] = torch.tensor(targets[first:])
                sums = _token_nll(self.model(x.to(self.device)), y.to(self.device)).double().sum(dim=1).tolist()
                for r, i in enumerate(group):
                    out[i] = sums[r]
        return out


def _token_nll(logits, targets):
    """Per-token NLL [B, T] in float32 (0 where the target is IGNORE): logsumexp minus the target's logit,
    which costs less than a full log-softmax; the same values as the training loss."""
    import torch

    from engine.model.decoder import IGNORE

    keep = targets != IGNORE
    safe = torch.where(keep, targets, 0)
    logits = logits.float()
    nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, safe[..., None])[..., 0]
    return nll * keep


def _fit_text(lm: ModelLM, text: str, budget: int) -> tuple[str, list[int]]:
    """The text (cut at a line end, or anywhere as a last resort) and its ids, within `budget` tokens."""
    ids = lm.encode(text)
    while len(ids) > budget and text:
        cut = max(1, int(len(text) * budget / len(ids) * 0.95))
        nl = text.rfind("\n", 0, cut)
        text = text[: nl + 1] if nl > cut // 2 else text[:cut]
        ids = lm.encode(text)
    return text, ids


def score_domains(lm: ModelLM, heldout: dict[str, list[str]], limits: EvalLimits) -> dict[str, DomainScore]:
    """Held-out NLL, tokens and bytes per domain (see the module docstring for the method)."""
    window = min(limits.window or lm.model.cfg.max_seq_len, lm.model.cfg.max_seq_len)
    rows, owners = [], []
    scores = {d: DomainScore() for d in heldout}
    for domain, docs in heldout.items():
        left = limits.bpb_tokens
        for text in docs[: limits.bpb_docs]:
            if left <= 0:
                break
            text, ids = _fit_text(lm, text, left)
            if not ids:
                continue
            left -= len(ids)
            s = scores[domain]
            s.docs += 1
            s.tokens += len(ids)
            s.bytes += len(text.encode("utf-8"))
            seq = [lm.eos, *ids]
            for start in range(0, len(ids), window):
                chunk = seq[start:start + window + 1]
                rows.append((chunk[:-1], chunk[1:], 0))
                owners.append(domain)
    for domain, nll in zip(owners, lm.nll_rows(rows)):
        scores[domain].nats += nll
    return scores


def sample_generations(lm: ModelLM, heldout: dict[str, list[str]], limits: EvalLimits) -> dict[str, list[dict]]:
    """Per domain, continuations of the opening of held-out documents (temperature 0.8, top-k 40, top-p 0.95)."""
    from engine.model.generate import SamplingConfig

    prompts, owners = [], []
    for domain, docs in heldout.items():
        for text in docs[: limits.samples]:
            prompt = text[:160]
            if len(text) > 160 and " " in prompt[80:]:
                prompt = prompt[: prompt.rindex(" ")]
            prompts.append(prompt)
            owners.append(domain)
    cfg = SamplingConfig(limits.sample_tokens, 0.8, 40, 0.95, limits.seed)
    done = lm.complete_many(prompts, limits.sample_tokens, [None] * len(prompts), sampling=cfg)
    out: dict[str, list[dict]] = {}
    for domain, prompt, d in zip(owners, prompts, done):
        out.setdefault(domain, []).append({"prompt": prompt, "completion": d.text, "reason": d.reason})
    return out


Progress = Callable[[str, int, int], None]  # (what now, parts done, parts in all)


def evaluate_model(model, tokenizer, heldout: dict[str, list[str]], limits: EvalLimits | None = None,
                   progress: Progress | None = None) -> EvalReport:
    """Bits per byte per domain, the probes whose domain has held-out text, and sample generations.
    `progress` hears of each part as it starts: scoring, each probe, the samples."""
    limits = limits or EvalLimits()
    limits.check()
    start = time.perf_counter()
    was_training = model.training
    parts = 1 + len(limits.probes) + (1 if limits.samples else 0)
    tell = progress or (lambda label, done, total: None)
    model.eval()
    try:
        lm = ModelLM(model, tokenizer, limits.batch)
        tell(f"bits per byte of {len(heldout)} domains", 0, parts)
        domains = score_domains(lm, heldout, limits)
        probes, notes = {}, []
        for i, name in enumerate(limits.probes, 1):
            tell(f"{name} probe", i, parts)
            mod = probe_module(name)
            texts = heldout.get(mod.DOMAIN, [])
            if not texts:
                notes.append(f"{name} probe skipped: no held-out {mod.DOMAIN!r} text")
                continue
            probes[name] = mod.run(lm, texts, getattr(limits, name), limits.seed)
        if limits.samples:
            tell("sample generations", parts - 1, parts)
        samples = sample_generations(lm, heldout, limits) if limits.samples else {}
        tell("done", parts, parts)
    finally:
        model.train(was_training)
    return EvalReport(domains, probes, samples, time.perf_counter() - start, notes)


# -- runs and evals.jsonl --------------------------------------------------------------------------

def record(report: EvalReport, run_id: str, step: int, checkpoint: str, checkpoint_sha256: str,
           limits: EvalLimits, device: str) -> dict[str, Any]:
    """The evals.jsonl line for a report."""
    return {
        "run": run_id,
        "step": step,
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "time": time.time(),
        "seconds": round(report.seconds, 3),
        "device": device,
        "probe_versions": {"bpb": BPB_VERSION, **versions()},
        "limits": {**asdict(limits), "probes": list(limits.probes)},
        "metrics": report.metrics(),
        "samples": report.samples,
        "examples": {name: p.examples for name, p in report.probes.items()},
        "notes": report.notes,
    }


def append_eval(run_dir: str | os.PathLike, rec: dict[str, Any]) -> None:
    """Append one record to the run's evals.jsonl (one line, flushed and synced)."""
    path = RunDir(run_dir).evals_file
    line = json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_evals(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's evals.jsonl, oldest first (a torn last line is skipped); those with
    `kind = "suite"` are benchmark suites (engine.lmeval), the others held-out evals."""
    path = RunDir(run_dir).evals_file
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def eval_run(run_dir: str | os.PathLike, step: int | None = None, limits: EvalLimits | None = None,
             device: str = "cpu", save: bool = True, threads: int | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate checkpoint `step` (the latest when None) of a run; append the record to evals.jsonl.

    `threads` sets torch's CPU threads (one is fastest for tiny models on a busy machine);
    `progress` hears of each part (see `evaluate_model`).
    """
    from engine.eval.run_model import find_checkpoint, load_model, load_tokenizer

    limits = limits or EvalLimits()
    limits.check()
    ckpt = find_checkpoint(run_dir, step)
    tok = load_tokenizer(ckpt)
    heldout = load_heldout(ckpt.spec.shards, ckpt.spec.domains, probe_docs(limits))
    if not heldout:
        raise RunError(f"{heldout_dir(ckpt.spec.shards)}: no held-out text for any of the run's domains "
                       f"({', '.join(ckpt.spec.domains)}); run `fcwork data build {ckpt.spec.profile}`")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if progress:
        progress(f"loading {ckpt.path.name} on {device}", 0, 0)
    model = load_model(ckpt, device)
    report = evaluate_model(model, tok, heldout, limits, progress)
    rec = record(report, ckpt.spec.run_id, ckpt.step, str(ckpt.path.relative_to(ckpt.spec.run_dir)), ckpt.sha256,
                 limits, device)
    if hasattr(model, "image_token_id") and ckpt.spec.image_domains:
        add_image_metrics(rec, model, tok, ckpt.spec, limits, progress)
    if save:
        append_eval(ckpt.spec.run_dir, rec)
    return rec


def add_image_metrics(rec: dict[str, Any], model, tok, spec, limits: EvalLimits,
                      progress: Progress | None = None) -> None:
    """A vision run's record gains caption loss and bits per byte on held-out pairs (beside the text
    domains) and the image probes (fen, chart): engine.eval.probes.vision."""
    from engine.eval.probes.vision import VERSION as vision_version, caption_eval, image_probes, open_image_pairs

    pairs = open_image_pairs(spec, heldout=True)
    if not pairs:
        rec["notes"].append("image probes skipped: no held-out image-text pairs")
        return
    if progress:
        progress("captions and image probes", 0, 0)
    m = rec["metrics"]
    for domain, c in caption_eval(model, pairs, limits.bpb_docs, spec.stage.seq_len, tok.eos_id).items():
        m["domain_loss"][domain], m["domain_bpb"][domain] = c["loss"], c["bpb"]
    m["probes"].update(image_probes(model, tok, pairs, spec.images))
    rec["probe_versions"]["vision"] = vision_version


def evaluate_for_run(model, spec, step: int, limits: EvalLimits | None = None, tokenizer=None,
                     heldout: dict[str, list[str]] | None = None, device: str = "") -> dict[str, Any]:
    """The trainer's hook: evaluate the model in memory at `step` of run `spec` (an engine.jobs.runs.RunSpec)
    and append the record to its evals.jsonl. Pass `tokenizer` and `heldout` to reuse them between evals.

    The record's checkpoint fields are empty: these weights are not (yet) a checkpoint on disk.
    """
    from engine.data.tokenizer import Tokenizer

    limits = limits or EvalLimits()
    limits.check()
    tokenizer = tokenizer or Tokenizer.load(spec.tokenizer)
    if heldout is None:
        heldout = load_heldout(spec.shards, spec.domains, probe_docs(limits))
    report = evaluate_model(model, tokenizer, heldout, limits)
    dev = device or str(next(model.parameters()).device)
    rec = record(report, spec.run_id, step, "", "", limits, dev)
    append_eval(spec.run_dir, rec)
    return rec


def probe_docs(limits: EvalLimits) -> int:
    """Held-out documents to read per domain: the scored ones, and enough for each probe to find its
    items (a document may give none)."""
    return max(limits.bpb_docs, 4 * max([getattr(limits, p) for p in limits.probes] + [limits.samples, 1]))
