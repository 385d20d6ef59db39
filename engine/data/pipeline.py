"""The data side of a profile end to end: corpus, tokenizer, shards, each redone only when stale.

The mix is not an input of any of them: a mix edit never rebuilds the corpus, retrains the
tokenizer or rewrites shards, so runs made before the edit still resume. A corpus domain is
rebuilt only when its own settings change and grows when its budget rises; shards follow the
corpus (appending what a domain grew by); the tokenizer is trained when there is none, or when
asked (`fcwork tokenizer train`, `data prepare --force`), never because the corpus changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Callable

from engine.atomic import atomic_write_text, read_json_object
from engine.data.corpus import CorpusSummary, build_corpus, corpus_is_current, read_manifest
from engine.data.tokenizer import TokenizerReport, file_hash, read_report, train_tokenizer
from engine.errors import DataError, TokenizerError
from engine.profile import Profile
from engine.workspace import Workspace

# progress(label, done, total); total 0 means "indeterminate, label is a status message".
ProgressFn = Callable[[str, int, int], None]
SHARD_STAMP = "stamp.json"


def _noop(label: str, done: int, total: int) -> None:
    pass


def settings_digest(profile: Profile) -> str:
    """What the tokenizer's own settings are (the [tokenizer] table and the seed)."""
    settings = json.dumps({**asdict(profile.tokenizer), "seed": profile.profile.seed}, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()


def tokenizer_key(ws: Workspace, profile: Profile) -> str:
    """The corpus a tokenizer was sampled from and its settings (kept in its report, for the record)."""
    manifest = read_manifest(ws.raw_dir(profile.name)) or {}
    return hashlib.sha256(f"{manifest.get('digest', '')}:{settings_digest(profile)}".encode()).hexdigest()


def tokenizer_state(ws: Workspace, profile: Profile) -> str:
    """"missing", "changed" (trained with other [tokenizer] settings: retrain only when asked) or "current"."""
    path = ws.tokenizer_path(profile.tokenizer_name)
    report = read_report(path.with_suffix(".json"))
    if not path.exists() or report is None or report.hash != file_hash(path):
        return "missing"
    if report.settings_digest and report.settings_digest != settings_digest(profile):
        return "changed"
    return "current"


def shard_plan(ws: Workspace, profile: Profile, force: bool = False) -> dict[str, dict]:
    """Per corpus domain: {"mode": "full" | "append" | "keep", "train": [start, end], "heldout": [start, end]}
    (byte ranges of the corpus files to encode)."""
    manifest = read_manifest(ws.raw_dir(profile.name)) or {}
    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    tok_hash = file_hash(tok_path) if tok_path.exists() else ""
    stamp = read_json_object(ws.tok_dir(profile.name) / SHARD_STAMP)
    done = stamp.get("domains", {}) if stamp.get("tokenizer_hash") == tok_hash else {}
    tok_dir = ws.tok_dir(profile.name)
    plan = {}
    built = manifest.get("domains") or {d: {} for d in profile.domains}  # a manifest listing none: the mix's
    for dom, m in built.items():
        # An entry without committed lengths (an older build, or made by hand): the whole files, always.
        train, held = int(m.get("train_bytes", -1)), int(m.get("heldout_bytes", -1))
        s = done.get(dom)
        have = all((tok_dir / sub / f"{dom}{ext}").exists() for sub in ("", "heldout") for ext in (".bin", ".idx"))
        if force or not s or not have or train < 0 or s.get("build_id") != m.get("build_id") \
                or s.get("heldout_bytes") != held or s.get("train_bytes", 0) > train \
                or _shard_docs(tok_dir / dom) != s.get("train_docs"):  # a shard renamed after the stamp: redo
            plan[dom] = {"mode": "full", "train": [0, train], "heldout": [0, held]}
        elif s.get("train_bytes") == train:
            plan[dom] = {"mode": "keep", "train": [train, train], "heldout": [held, held]}
        else:
            plan[dom] = {"mode": "append", "train": [int(s["train_bytes"]), train], "heldout": [held, held]}
    return plan


def _shard_docs(prefix) -> int | None:
    from engine.data.shards import shard_counts
    from engine.errors import ShardError

    try:
        return shard_counts(prefix)[1]
    except ShardError:
        return None


def shards_are_current(ws: Workspace, profile: Profile) -> bool:
    plan = shard_plan(ws, profile)
    return bool(plan) and ws.tokenizer_path(profile.tokenizer_name).exists() and \
        all(p["mode"] == "keep" for p in plan.values())


def build_data(ws: Workspace, profile: Profile, progress: ProgressFn = _noop, workers: int | None = None,
               rebuild: bool = False) -> CorpusSummary:
    """`fcwork data build`: build new domains, grow those whose budget rose, keep the rest."""
    return build_corpus(profile, ws.raw_dir(profile.name), workers=workers, rebuild=rebuild,
                        progress=lambda d, done, total: progress(f"corpus {d}", done, total))


def train_profile_tokenizer(ws: Workspace, profile: Profile, progress: ProgressFn = _noop) -> TokenizerReport:
    """`fcwork tokenizer train`: SentencePiece on a balanced sample of the profile's corpus."""
    raw = ws.raw_dir(profile.name)
    manifest = read_manifest(raw)
    if manifest is None:
        raise TokenizerError(f"{raw}: no corpus yet (run `fcwork data build {profile.name}` first)")
    domains = manifest.get("domains") or {}
    # Every domain of the built corpus, whatever the mix; a manifest that lists none (made by hand,
    # or by an older build) falls back to the profile's weighted domains.
    names = list(domains) or profile.domains
    t = profile.tokenizer
    return train_tokenizer(
        raw, ws.tokenizer_path(profile.tokenizer_name), names, t.vocab_size,
        model_type=t.model_type, sample_chars=t.sample_chars, character_coverage=t.character_coverage,
        user_symbols=t.user_symbols, threads=t.threads, seed=profile.profile.seed,
        corpus_digest=tokenizer_key(ws, profile), progress=lambda msg: progress(msg, 0, 0),
        sizes={d: int(m.get("chars", 0)) for d, m in domains.items() if "chars" in m},
        limits={d: int(m["train_bytes"]) for d, m in domains.items() if "train_bytes" in m},
        settings_digest=settings_digest(profile),
    )


def pretokenize_profile(ws: Workspace, profile: Profile, progress: ProgressFn = _noop, workers: int | None = None,
                        force: bool = True) -> dict:
    """`fcwork data pretokenize`: shards per domain (training and held-out) with the profile's tokenizer;
    with force False, a grown domain has only its new documents encoded and appended, an unchanged one is kept."""
    from engine.data.pretokenize import pretokenize

    raw, tok_dir = ws.raw_dir(profile.name), ws.tok_dir(profile.name)
    manifest = read_manifest(raw)
    if manifest is None:
        raise DataError(f"{raw}: no corpus yet (run `fcwork data build {profile.name}` first)")
    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    if not tok_path.exists():
        raise TokenizerError(f"{tok_path}: no tokenizer yet (run `fcwork tokenizer train {profile.name}` first)")
    plan = shard_plan(ws, profile, force=force)
    result = pretokenize(raw, tok_dir, tok_path, list(plan), workers=workers, plan=plan,
                         progress=lambda d, done, total: progress(f"shards {d}", done, total))
    doms = manifest.get("domains", {})
    atomic_write_text(tok_dir / SHARD_STAMP, json.dumps({
        "tokenizer_hash": file_hash(tok_path), "corpus_digest": manifest.get("digest"),
        "domains": {d: {"build_id": doms.get(d, {}).get("build_id", ""), "train_bytes": plan[d]["train"][1],
                        "heldout_bytes": plan[d]["heldout"][1], "train_docs": result[d]["docs"]} for d in plan},
    }) + "\n")
    return result


def prepare_data(ws: Workspace, profile: Profile, progress: ProgressFn = _noop, force: bool = False,
                 notes: list[str] | None = None) -> list[str]:
    """Corpus, tokenizer, shards and image-text data (engine.data.imagedata, at `data.image_size`),
    skipping each step whose outputs are current; returns the steps run.
    `force` rebuilds the corpus, retrains the tokenizer and re-encodes every shard. Notes for the user
    (a tokenizer whose settings changed, which is kept) are appended to `notes`."""
    ran = []
    if force or not corpus_is_current(profile, ws.raw_dir(profile.name)):
        build_data(ws, profile, progress, rebuild=force)
        ran.append("corpus")
    state = tokenizer_state(ws, profile)
    if force or state == "missing":
        train_profile_tokenizer(ws, profile, progress)
        ran.append("tokenizer")
    elif state == "changed" and notes is not None:
        notes.append(f"tokenizer {profile.tokenizer_name} was trained with other [tokenizer] settings; kept, so "
                     f"earlier runs stay usable (`fcwork tokenizer train {profile.name}` retrains it)")
    if force or "tokenizer" in ran or not shards_are_current(ws, profile):
        pretokenize_profile(ws, profile, progress, force=force or "tokenizer" in ran)
        ran.append("shards")
    if profile.image_domains:
        from engine.data.imagedata import prepare_images

        if prepare_images(ws, profile, progress=progress, force=force):
            ran.append("images")
    return ran
