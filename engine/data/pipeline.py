"""The data side of a profile end to end: corpus, tokenizer, shards, each redone only when stale."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Callable

from engine.atomic import atomic_write_text
from engine.data.corpus import CorpusSummary, build_corpus, config_digest, read_manifest
from engine.errors import DataError, TokenizerError
from engine.profile import Profile
from engine.data.tokenizer import TokenizerReport, file_hash, read_report, train_tokenizer
from engine.workspace import Workspace

# progress(label, done, total); total 0 means "indeterminate, label is a status message".
ProgressFn = Callable[[str, int, int], None]
SHARD_STAMP = "stamp.json"


def _noop(label: str, done: int, total: int) -> None:
    pass


def corpus_is_current(ws: Workspace, profile: Profile) -> bool:
    manifest = read_manifest(ws.raw_dir(profile.name))
    return bool(manifest) and manifest.get("config_digest") == config_digest(profile)


def tokenizer_key(ws: Workspace, profile: Profile) -> str:
    """What the tokenizer depends on: the corpus it was sampled from and its own settings."""
    manifest = read_manifest(ws.raw_dir(profile.name)) or {}
    settings = json.dumps(asdict(profile.tokenizer), sort_keys=True)
    return hashlib.sha256(f"{manifest.get('digest', '')}:{settings}".encode()).hexdigest()


def tokenizer_is_current(ws: Workspace, profile: Profile) -> bool:
    path = ws.tokenizer_path(profile.tokenizer_name)
    report = read_report(path.with_suffix(".json"))
    return path.exists() and report is not None and report.corpus_digest == tokenizer_key(ws, profile) \
        and report.hash == file_hash(path)


def shards_are_current(ws: Workspace, profile: Profile) -> bool:
    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    try:
        stamp = json.loads((ws.tok_dir(profile.name) / SHARD_STAMP).read_text())
    except (OSError, ValueError):
        return False
    manifest = read_manifest(ws.raw_dir(profile.name)) or {}
    return tok_path.exists() and stamp.get("tokenizer_hash") == file_hash(tok_path) \
        and stamp.get("corpus_digest") == manifest.get("digest")


def build_data(ws: Workspace, profile: Profile, progress: ProgressFn = _noop, workers: int | None = None) -> CorpusSummary:
    """`fcwork data build`: the corpus of every domain in the mix."""
    return build_corpus(profile, ws.raw_dir(profile.name), workers=workers,
                        progress=lambda d, done, total: progress(f"corpus {d}", done, total))


def train_profile_tokenizer(ws: Workspace, profile: Profile, progress: ProgressFn = _noop) -> TokenizerReport:
    """`fcwork tokenizer train`: SentencePiece on a balanced sample of the profile's corpus."""
    raw = ws.raw_dir(profile.name)
    if read_manifest(raw) is None:
        raise TokenizerError(f"{raw}: no corpus yet (run `fcwork data build {profile.name}` first)")
    t = profile.tokenizer
    return train_tokenizer(
        raw, ws.tokenizer_path(profile.tokenizer_name), profile.domains, t.vocab_size,
        model_type=t.model_type, sample_chars=t.sample_chars, character_coverage=t.character_coverage,
        user_symbols=t.user_symbols, threads=t.threads, seed=profile.profile.seed,
        corpus_digest=tokenizer_key(ws, profile), progress=lambda msg: progress(msg, 0, 0),
    )


def pretokenize_profile(ws: Workspace, profile: Profile, progress: ProgressFn = _noop, workers: int | None = None) -> dict:
    """`fcwork data pretokenize`: shards per domain (training and held-out) with the profile's tokenizer."""
    from engine.data.pretokenize import pretokenize

    raw, tok_dir = ws.raw_dir(profile.name), ws.tok_dir(profile.name)
    manifest = read_manifest(raw)
    if manifest is None:
        raise DataError(f"{raw}: no corpus yet (run `fcwork data build {profile.name}` first)")
    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    if not tok_path.exists():
        raise TokenizerError(f"{tok_path}: no tokenizer yet (run `fcwork tokenizer train {profile.name}` first)")
    result = pretokenize(raw, tok_dir, tok_path, profile.domains, workers=workers,
                         progress=lambda d, done, total: progress(f"shards {d}", done, total))
    atomic_write_text(tok_dir / SHARD_STAMP, json.dumps({
        "tokenizer_hash": file_hash(tok_path), "corpus_digest": manifest.get("digest"),
    }) + "\n")
    return result


def prepare_data(ws: Workspace, profile: Profile, progress: ProgressFn = _noop, force: bool = False) -> list[str]:
    """Corpus, tokenizer and shards, skipping each step whose outputs are current; returns the steps run."""
    ran = []
    if force or not corpus_is_current(ws, profile):
        build_data(ws, profile, progress)
        ran.append("corpus")
    if force or ran or not tokenizer_is_current(ws, profile):
        train_profile_tokenizer(ws, profile, progress)
        ran.append("tokenizer")
    if force or ran or not shards_are_current(ws, profile):
        pretokenize_profile(ws, profile, progress)
        ran.append("shards")
    return ran
