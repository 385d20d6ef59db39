"""Launching a stage: a new run folder with its frozen stage.toml (engine.jobs.spec reads it back).

The frozen stage resolves what the profile only names: model shape, tokenizer hash, shard
folder, init checkpoint (the latest finished run of the stage named by `init_from`), starting
mix. No torch here.
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
from engine.errors import DataError, RunError, TokenizerError
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
        prefix = shard_dir / domain
        for ext in (".bin", ".idx"):
            path = shard_dir / f"{domain}{ext}"
            if not path.exists():
                raise DataError(
                    f"{path}: no shard for domain {domain!r} (run `fcwork data pretokenize {profile.name}` first)"
                )
        shard = open_shard(prefix, expected_hash=tok_hash)
        vocab = shard.vocab_size
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
        if meta.profile != profile.name or meta.stage != init_from:
            continue
        if run.state() != RunState.FINISHED:
            continue
        ckpt = run.latest_checkpoint()
        if ckpt is not None:
            return ckpt
    raise RunError(
        f"{profile.path or profile.name}: stage {stage_name!r}: init_from = {init_from!r}: no finished run of "
        f"stage {init_from!r} with a checkpoint in {ws.runs_dir} (train {init_from!r} first)"
    )


def create_run(ws: Workspace, profile: Profile, stage_name: str) -> Path:
    """Make `runs/<run-id>/stage.toml` for a stage of `profile`, frozen with everything the trainer
    needs: resolved model shape, tokenizer hash, shard folder, init checkpoint, starting mix."""
    stage = profile.stage(stage_name)
    mix = run_domains(profile, stage)
    image_domains = stage_image_domains(profile, stage)
    text = [d for d in mix if d not in image_domains]
    tok_path, tok_hash, shard_dir, vocab = _check_data(ws, profile, text)
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
