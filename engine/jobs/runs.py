"""Launching a stage: a new run folder with its frozen stage.toml (engine.jobs.spec reads it back).

The frozen stage resolves what the profile only names: model shape, tokenizer hash, shard
folder, init checkpoint (the latest finished run of the stage named by `init_from`, or the stage
or run a queue entry names instead), starting mix. No torch here.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import tomli_w

from engine.atomic import atomic_write_text
from engine.data.tokenizer import file_hash
from engine.errors import DataError, RunError, TokenizerError, differing_prefixes
from engine.jobs.protocol import RunState
from engine.jobs.rundir import RunDir
from engine.mix import normalise
from engine.profile import Profile, StageConfig
from engine.workspace import Workspace


def run_domains(profile: Profile, stage: StageConfig) -> dict[str, float]:
    """The run's starting mix, normalised, over every domain that has data (weight 0 kept, so it
    can be switched on later) plus any the stage's own mix adds."""
    domains = [d for d, w in profile.mix.items() if w > 0]
    domains += [d for d, w in stage.mix.items() if w > 0 and d not in domains]
    weights = {d: (stage.mix.get(d, 0.0) if stage.mix else profile.mix[d]) for d in domains}
    return normalise(weights)  # cannot fail: parse_profile checked both mixes


def stage_image_domains(profile: Profile, stage: StageConfig) -> list[str]:
    """The image-text domains a stage trains on (weighted in its starting mix): empty for a text stage."""
    return [d for d in run_domains(profile, stage) if d in profile.image_domains]


def _check_data(ws: Workspace, profile: Profile, domains: list[str]) -> tuple[Path, str, Path, int]:
    """Tokenizer path and hash, shard folder and vocabulary size; one-line errors when missing."""
    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    if not tok_path.exists():
        raise TokenizerError(f"{tok_path}: no tokenizer yet (run `fcwork tokenizer train {profile.name}` first)")
    tok_hash = file_hash(tok_path)
    shard_dir = ws.tok_dir(profile.name)
    from engine.data.shards import open_shard

    vocab = 0
    for domain in domains:
        for ext in (".bin", ".idx"):
            path = shard_dir / f"{domain}{ext}"
            if not path.exists():
                raise DataError(f"{path}: no shard for domain {domain!r} "
                                f"(run `fcwork data pretokenize {profile.name}` first)")
        vocab = open_shard(shard_dir / domain, expected_hash=tok_hash).vocab_size
    return tok_path, tok_hash, shard_dir, vocab


def _check_images(ws: Workspace, profile: Profile, stage: StageConfig, model, domains: list[str],
                  tok_hash: str) -> Path:
    """The image shards' folder of a stage whose mix weights image-text domains; one-line errors when
    the model has no tower or the images at its size are missing or stale."""
    from engine.data.imagedata import image_dir, open_pairs

    where = f"{profile.path or profile.name}: stage {stage.name!r}"
    if not model.has_vision:
        raise RunError(f"{where}: mix weights image-text domain {domains[0]!r}, but the model has no vision tower "
                       "(vision_layers = 0)")
    folder = image_dir(ws, profile, model.image_size)
    for domain in domains:
        if not (folder / f"{domain}.img").exists():
            raise DataError(f"{folder / (domain + '.img')}: no images at the tower's {model.image_size} px for "
                            f"domain {domain!r} (set data.image_size = {model.image_size} and run "
                            f"`fcwork data prepare {profile.name}`)")
        open_pairs(folder / domain, domain, model.image_size, tok_hash)
    return folder


def _new_run_dir(ws: Workspace, stage_name: str, now: float) -> Path:
    """runs/<YYYYmmdd-HHMMSS>-<stage>, with -2, -3, ... when taken; claimed with mkdir (race-free)."""
    ws.runs_dir.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{stage_name}"
    for n in range(1, 10_000):
        path = ws.runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"{ws.runs_dir}: cannot find a free run id for {base}")


def find_init_checkpoint(ws: Workspace, profile: Profile, stage_name: str, init_from: str) -> Path:
    """The final checkpoint of the latest finished run of stage `init_from` of this profile."""
    for run in reversed(RunDir.all(ws)):
        try:
            meta = run.meta()
        except RunError:
            continue
        if meta.profile != profile.name or meta.stage != init_from or run.state() != RunState.FINISHED:
            continue
        ckpt = run.latest_checkpoint()
        if ckpt is not None:
            return ckpt
    raise RunError(
        f"{profile.path or profile.name}: stage {stage_name!r}: init_from = {init_from!r}: no finished run of "
        f"stage {init_from!r} with a checkpoint in {ws.runs_dir} (train {init_from!r} first)"
    )


def check_start(ws: Workspace, profile: Profile, stage_name: str, start: str) -> str:
    """A queue entry's own start point for a stage that has init_from: another stage of the profile
    (kept as its name: its latest finished run when the run is made), else a run id or a prefix of
    one (kept whole), which must be a finished run of this profile, tokenizer and model shape."""
    stage = profile.stage(stage_name)
    where = f"{profile.path or profile.name}: stage {stage_name!r}: from {start!r}"
    if not stage.init_from:
        raise RunError(f"{where}: the stage starts from scratch (no init_from), so there is no start point to choose")
    others = [s.name for s in profile.stages if s.name != stage_name]
    if start in others:
        return start
    if start == stage_name:
        raise RunError(f"{where}: expected another stage ({', '.join(others)}) or a run, not the stage itself")
    try:
        run = RunDir.resolve(ws, start)
    except RunError as exc:
        raise RunError(f"{where}: expected a stage of {profile.name} ({', '.join(others)}) or a run: {exc}") from None
    if run.path.parent.resolve() != ws.runs_dir.resolve():
        raise RunError(f"{where}: expected a run of this workspace ({ws.runs_dir}), got {run.path}")
    tok_path = ws.tokenizer_path(profile.tokenizer_name)
    start_checkpoint(profile, stage, run, file_hash(tok_path) if tok_path.exists() else "", where)
    return run.id


def start_checkpoint(profile: Profile, stage: StageConfig, run: RunDir, tok_hash: str, where: str) -> Path:
    """The final checkpoint of `run`, refused unless it is a finished run of this profile with the
    tokenizer `tok_hash` ("": not checked) and the stage's model shape."""
    meta = run.meta()
    if meta.profile != profile.name:
        raise RunError(f"{where}: run {run.id} is of profile {meta.profile!r}, expected one of {profile.name!r}")
    state = run.state()
    if state != RunState.FINISHED:
        raise RunError(f"{where}: run {run.id} is {state or 'not started'}; expected a finished run")
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        raise RunError(f"{where}: run {run.id} finished without a checkpoint to start from")
    doc = run.read_stage()
    theirs = str(doc.get("paths", {}).get("tokenizer_hash", ""))
    if tok_hash and theirs != tok_hash:
        a, b = differing_prefixes(theirs, tok_hash)
        raise RunError(f"{where}: run {run.id} was trained with tokenizer {a or '?'}..., this profile's is {b}... "
                       "(expected a run of the same tokenizer)")
    shape = doc.get("stage", {}).get("model", {})
    ours = asdict(stage.model_config(int(shape.get("vocab_size", 0) or 0)))
    diff = [f"{k} {shape.get(k)!r} (expected {v!r})" for k, v in ours.items() if shape.get(k) != v]
    if diff:
        raise RunError(f"{where}: run {run.id} has another model shape: {', '.join(diff[:3])}")
    return ckpt


def create_run(ws: Workspace, profile: Profile, stage_name: str, init_from: str = "") -> Path:
    """Make `runs/<run-id>/stage.toml` for a stage of `profile`, frozen with everything the trainer
    needs: resolved model shape, tokenizer hash, shard folder, init checkpoint, starting mix.
    `init_from` (a queue entry's, see check_start) starts it from that stage or run instead."""
    stage = profile.stage(stage_name)
    mix = run_domains(profile, stage)
    image_domains = stage_image_domains(profile, stage)
    text = [d for d in mix if d not in image_domains]
    tok_path, tok_hash, shard_dir, vocab = _check_data(ws, profile, text)
    if init_from:  # the entry's own start point, checked again: the run may have changed since it was queued
        init_from = check_start(ws, profile, stage_name, init_from)
        where = f"{profile.path or profile.name}: stage {stage_name!r}: from {init_from!r}"
        run = (RunDir(find_init_checkpoint(ws, profile, stage_name, init_from).parent.parent)
               if init_from in [s.name for s in profile.stages] else RunDir(ws.runs_dir / init_from))
        init_ckpt: Path | None = start_checkpoint(profile, stage, run, tok_hash, where)
    else:
        init_ckpt = find_init_checkpoint(ws, profile, stage_name, stage.init_from) if stage.init_from else None
    if not vocab:  # an image-only stage: the vocabulary from the tokenizer itself
        from engine.data.tokenizer import Tokenizer

        vocab = Tokenizer.load(tok_path).vocab_size
    model = stage.model_config(vocab)
    images = _check_images(ws, profile, stage, model, image_domains, tok_hash) if image_domains else None
    stage_table = asdict(stage)
    stage_table["model"] = asdict(model)
    stage_table["mix_max_epochs"] = stage.mix_max_epochs or profile.data.warn_epochs  # frozen: the run's ceiling
    now = time.time()
    run = RunDir(_new_run_dir(ws, stage_name, now))
    doc = {
        "run": {
            "id": run.id,
            "profile": profile.name,
            "stage": stage_name,
            "created": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
            "workspace": str(ws.root),
        },
        "paths": {
            "tokenizer": str(tok_path),
            "tokenizer_hash": tok_hash,
            "shards": str(shard_dir),
            "init_from": str(init_ckpt) if init_ckpt else "",
        },
        "stage": stage_table,
        "mix": mix,
    }
    if images is not None:
        doc["images"] = {"dir": str(images), "domains": image_domains}
    try:
        atomic_write_text(run.stage_file, tomli_w.dumps(doc))
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)  # no half-made run folder
        raise
    return run.path
