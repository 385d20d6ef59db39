"""SentencePiece tokenizer: training on a domain-balanced sample, loading, and its identity hash.

Settings that matter for code: no whitespace normalisation, no dummy prefix, newline and
indentation runs as pieces, byte fallback, split digits; so any UTF-8 text (a Python file
included) survives encode/decode byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from engine.atomic import atomic_write_bytes, atomic_write_text
from engine.errors import TokenizerError

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
# Whitespace runs kept whole so indented code costs few tokens (spaces in SentencePiece's "\u2581" form).
WHITESPACE_SYMBOLS = ("\n", "\t", "\n\n", "\u2581" * 2, "\u2581" * 4, "\u2581" * 8, "\u2581" * 12)
MAX_SENTENCE_CHARS = 4000


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file: the tokenizer's identity everywhere downstream."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such tokenizer file") from None
    return h.hexdigest()


class Tokenizer:
    """A loaded SentencePiece model with the ids and hash the rest of the engine relies on."""

    def __init__(self, path: Path, sp, digest: str) -> None:
        self.path = path
        self.sp = sp
        self.hash = digest
        self.vocab_size: int = sp.get_piece_size()
        self.bos_id: int = sp.bos_id()
        self.eos_id: int = sp.eos_id()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        import sentencepiece as spm

        path = Path(path)
        digest = file_hash(path)
        try:
            sp = spm.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"{path}: not a SentencePiece model ({exc})") from None
        return cls(path, sp, digest)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def symbol_id(self, symbol: str) -> int:
        """The id of a user symbol (`<|end|>`); TokenizerError when the model has no such piece."""
        i = self.sp.piece_to_id(symbol)
        if i == self.sp.unk_id() or self.sp.id_to_piece(i) != symbol:
            raise TokenizerError(f"{self.path}: no piece {symbol!r} (a tokenizer trained without the chat "
                                 "symbols cannot train or prompt a chat stage; retrain it)")
        return i


@dataclass
class TokenizerReport:
    """What training produced, saved beside the model as `<name>.json`."""

    name: str
    hash: str
    vocab_size: int
    model_type: str
    sample_chars: dict[str, int]
    tokens_per_char: dict[str, float]
    train_seconds: float
    corpus_digest: str = ""  # the corpus it was sampled from (informational: a grown corpus keeps the tokenizer)
    settings_digest: str = ""  # the [tokenizer] settings it was trained with
    created: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def read_report(path: str | os.PathLike) -> TokenizerReport | None:
    """The training report beside a model, or None when absent or unreadable."""
    try:
        return TokenizerReport(**json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _iter_lines(path: Path, limit: int = -1) -> Iterator[bytes]:
    """Lines of a corpus file, up to byte `limit` (the length the manifest committed; -1: all)."""
    with open(path, "rb") as fh:
        pos = 0
        for line in fh:
            pos += len(line)
            if 0 <= limit < pos:
                return
            yield line


def _iter_docs(path: Path, limit: int = -1) -> Iterator[str]:
    """Texts of a corpus file, up to byte `limit`."""
    return (json.loads(line)["text"] for line in _iter_lines(path, limit) if line.strip())


def _sentences(doc: str) -> Iterator[str]:
    """Cut a document into training sentences at line boundaries, newlines kept."""
    buf: list[str] = []
    size = 0
    for line in doc.splitlines(keepends=True):
        while len(line) > MAX_SENTENCE_CHARS:
            if buf:
                yield "".join(buf)
                buf, size = [], 0
            yield line[:MAX_SENTENCE_CHARS]
            line = line[MAX_SENTENCE_CHARS:]
        if size + len(line) > MAX_SENTENCE_CHARS and buf:
            yield "".join(buf)
            buf, size = [], 0
        buf.append(line)
        size += len(line)
    if buf:
        yield "".join(buf)


def balanced_sample(raw_dir: Path, domains: Sequence[str], total_chars: int, seed: int,
                    sizes: dict[str, int] | None = None, limits: dict[str, int] | None = None) -> dict[str, list[str]]:
    """Equal character budgets per domain (a small domain gives what it has, the rest share its leftover),
    drawn in one streaming pass per domain: each document is taken with probability budget / domain size
    (seeded), so memory holds the sample, never the domain. `sizes` (characters per domain, from the
    manifest) saves a counting pass; `limits` caps each file at its committed byte length."""
    sizes = dict(sizes or {})
    limits = limits or {}
    paths = {}
    for d in domains:
        path = raw_dir / f"{d}.jsonl"
        if not path.exists():
            raise TokenizerError(f"{path}: missing corpus file (run `fcwork data build` first)")
        paths[d] = path
        if d not in sizes:
            sizes[d] = sum(len(t) for t in _iter_docs(path, limits.get(d, -1)))
    budget: dict[str, int] = {}
    remaining, open_domains = total_chars, sorted(domains, key=lambda d: sizes[d])
    while open_domains:
        share = remaining // len(open_domains)
        d = open_domains.pop(0)
        budget[d] = min(share, sizes[d])
        remaining -= budget[d]
    sample: dict[str, list[str]] = {}
    for d in domains:
        # A little over budget / size, so the draw seldom falls short; the budget still caps it.
        p = min(1.0, 1.1 * budget[d] / sizes[d]) if sizes[d] else 0.0
        rng = random.Random(f"{seed}:{d}")
        taken, used = [], 0
        for line in (_iter_lines(paths[d], limits.get(d, -1)) if p > 0 else ()):
            if used >= budget[d]:
                break
            if rng.random() >= p or not line.strip():
                continue
            text = json.loads(line)["text"][: budget[d] - used + MAX_SENTENCE_CHARS]
            taken.append(text)
            used += len(text)
        sample[d] = taken
    return sample


def train_tokenizer(
    raw_dir: Path,
    out_path: Path,
    domains: Sequence[str],
    vocab_size: int,
    model_type: str = "bpe",
    sample_chars: int = 4_000_000,
    character_coverage: float = 0.9995,
    user_symbols: Sequence[str] = (),
    threads: int = 0,
    seed: int = 0,
    corpus_digest: str = "",
    progress: Callable[[str], None] | None = None,
    sizes: dict[str, int] | None = None,
    limits: dict[str, int] | None = None,
    settings_digest: str = "",
) -> TokenizerReport:
    """Train SentencePiece on a domain-balanced sample of the corpus; write model, vocab and report atomically."""
    import sentencepiece as spm

    say = progress or (lambda msg: None)
    say("sampling corpus")
    sample = balanced_sample(raw_dir, domains, sample_chars, seed, sizes=sizes, limits=limits)
    sample_sizes = {d: sum(len(t) for t in sample[d]) for d in domains}
    sentences = [s for d in domains for doc in sample.pop(d) for s in _sentences(doc)]
    random.Random(seed).shuffle(sentences)
    if not sentences:
        raise TokenizerError(f"{raw_dir}: the corpus is empty; nothing to train a tokenizer on")
    symbols = list(dict.fromkeys([*user_symbols, *WHITESPACE_SYMBOLS]))
    model = io.BytesIO()
    say(f"training {model_type} tokenizer, vocab {vocab_size}, on {sum(map(len, sentences)):,} chars")
    start = time.perf_counter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            byte_fallback=True,
            split_digits=True,
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            normalization_rule_name="identity",
            allow_whitespace_only_pieces=True,
            split_by_whitespace=True,
            max_sentence_length=MAX_SENTENCE_CHARS * 4,
            user_defined_symbols=symbols,
            unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
            num_threads=threads or os.cpu_count() or 1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise TokenizerError(f"{out_path}: SentencePiece training failed: {str(exc).strip().splitlines()[-1]}") from None
    seconds = time.perf_counter() - start
    data = model.getvalue()
    atomic_write_bytes(out_path, data)
    tok = Tokenizer.load(out_path)
    # One piece a line as SentencePiece writes it, with newline and tab pieces escaped.
    escape = str.maketrans({"\n": "\\n", "\t": "\\t"})
    vocab_lines = "".join(
        f"{tok.sp.id_to_piece(i).translate(escape)}\t{tok.sp.get_score(i):g}\n" for i in range(tok.vocab_size)
    )
    atomic_write_text(out_path.with_suffix(".vocab"), vocab_lines)
    say("measuring tokens per character")
    report = TokenizerReport(
        name=out_path.stem,
        hash=tok.hash,
        vocab_size=tok.vocab_size,
        model_type=model_type,
        sample_chars=sample_sizes,
        tokens_per_char=tokens_per_char(tok, raw_dir, domains),
        train_seconds=round(seconds, 2),
        corpus_digest=corpus_digest,
        settings_digest=settings_digest,
    )
    report.save(out_path.with_suffix(".json"))
    return report


def tokens_per_char(tok: Tokenizer, raw_dir: Path, domains: Sequence[str], max_chars: int = 300_000) -> dict[str, float]:
    """Tokens per character per domain, measured on held-out text (training text if none)."""
    out = {}
    for d in domains:
        path = raw_dir / "heldout" / f"{d}.jsonl"
        if not path.exists() or path.stat().st_size == 0:
            path = raw_dir / f"{d}.jsonl"
        texts, used = [], 0
        for text in _iter_docs(path) if path.exists() else ():
            texts.append(text)
            used += len(text)
            if used >= max_chars:
                break
        n_tokens = sum(len(ids) for ids in tok.encode_batch(texts)) if texts else 0
        out[d] = round(n_tokens / used, 4) if used else 0.0
    return out
