"""Run folders: create one per stage launch (with its frozen stage.toml), list them, summarise them.

A run folder `runs/<run-id>/` holds everything about one training launch (docs/formats.md):
the trainer reads only `stage.toml`, so a later profile edit never changes a run in flight.
No torch here: the CLI, the TUI and the supervisor use this module.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from engine.compat import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomli_w

from engine.atomic import atomic_write_text
from engine.errors import DataError, ProfileError, RunError, TokenizerError
from engine.jobs.events import EVENTS_FILE, tail_events
from engine.model.config import ModelConfig
from engine.profile import Profile, StageConfig, normalise_mix, parse_profile
from engine.data.tokenizer import file_hash
from engine.workspace import Workspace

STAGE_FILE = "stage.toml"
CKPT_DIR = "ckpt"
CKPT_PREFIX = "step-"
CKPT_STATE = "state.json"


@dataclass
class RunSummary:
    """What a run list shows: identity from stage.toml, progress from the tail of events.jsonl."""

    run_id: str
    path: Path
    profile: str
    stage: str
    created: str
    state: str          # the last status event's state; "created" before the trainer ever ran
    step: int
    max_steps: int
    loss: float | None  # the last step event's loss
    message: str = ""


# -- creating a run ---------------------------------------------------------------------

def run_domains(profile: Profile, stage: StageConfig) -> dict[str, float]:
    """The run's starting mix, normalised, over every domain that has data (weight 0 kept, so it
    can be switched on later) plus any the stage's own mix adds."""
    domains = [d for d, w in profile.mix.items() if w > 0]
    domains += [d for d, w in stage.mix.items() if w > 0 and d not in domains]
    weights = {d: (stage.mix.get(d, 0.0) if stage.mix else profile.mix[d]) for d in domains}
    return normalise_mix(weights)


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
    for run_dir in reversed(list_runs(ws)):
        try:
            meta = read_stage_toml(run_dir).get("run", {})
        except RunError:
            continue
        if meta.get("profile") != profile.name or meta.get("stage") != init_from:
            continue
        if last_status(run_dir) != "finished":
            continue
        ckpt = latest_checkpoint(run_dir)
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
    tok_path, tok_hash, shard_dir, vocab = _check_data(ws, profile, list(mix))
    init_ckpt = find_init_checkpoint(ws, profile, stage_name, stage.init_from) if stage.init_from else None
    model = stage.model_config(vocab)
    stage_table = asdict(stage)
    stage_table["model"] = asdict(model)
    now = time.time()
    run_dir = _new_run_dir(ws, stage_name, now)
    doc = {
        "run": {
            "id": run_dir.name,
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
    try:
        atomic_write_text(run_dir / STAGE_FILE, tomli_w.dumps(doc))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # no half-made run folder
        raise
    return run_dir


# -- reading runs -----------------------------------------------------------------------

@dataclass
class RunSpec:
    """A run's frozen stage.toml, validated: what the trainer trains and on which data."""

    run_dir: Path
    run_id: str
    profile: str
    stage: StageConfig
    model: ModelConfig
    tokenizer: Path
    tokenizer_hash: str
    shards: Path
    init_from: Path | None
    mix: dict[str, float]  # the starting mix, normalised; its keys are the run's domains

    @property
    def domains(self) -> list[str]:
        return list(self.mix)


def load_run_spec(run_dir: str | os.PathLike) -> RunSpec:
    """Read and validate RUN_DIR/stage.toml; every problem is a one-line RunError naming the key."""
    run_dir = Path(run_dir)
    origin = str(run_dir / STAGE_FILE)
    doc = read_stage_toml(run_dir)
    for table in ("run", "paths", "stage", "mix"):
        if not isinstance(doc.get(table), dict):
            raise RunError(f"{origin}: [{table}]: missing (expected a table)")
    paths = doc["paths"]
    for key in ("tokenizer", "tokenizer_hash", "shards", "init_from"):
        if not isinstance(paths.get(key), str):
            raise RunError(f"{origin}: paths.{key}: expected a string, got {paths.get(key)!r}")
    for key in ("tokenizer", "tokenizer_hash", "shards"):
        if not paths[key]:
            raise RunError(f"{origin}: paths.{key}: expected a non-empty string")
    try:
        mix = normalise_mix(doc["mix"])
    except ProfileError as exc:
        raise RunError(f"{origin}: {exc}") from None
    stage_table = dict(doc["stage"])
    model = stage_table.get("model")
    if not isinstance(model, dict):
        raise RunError(f"{origin}: stage.model: expected a table with the resolved model shape, got {model!r}")
    # Validate through the profile parser: one stage, its init_from already resolved to a path.
    stage_table["init_from"] = ""
    check_mix = {**{d: 0.0 for d in stage_table.get("mix", {}) if isinstance(stage_table.get("mix"), dict)}, **mix}
    meta = doc["run"]
    try:
        prof = parse_profile({"profile": {"name": str(meta.get("profile") or "run")}, "mix": check_mix,
                              "stages": [stage_table]}, origin)
    except ProfileError as exc:
        raise RunError(str(exc).replace("stages[0]", "stage")) from None
    stage = prof.stages[0]
    stage.init_from = str(doc["stage"].get("init_from", ""))
    cfg = ModelConfig(**model)
    if cfg.vocab_size <= 0:
        raise RunError(f"{origin}: stage.model.vocab_size: expected the tokenizer's vocabulary size, got {cfg.vocab_size}")
    return RunSpec(
        run_dir=run_dir, run_id=str(meta.get("id") or run_dir.name), profile=str(meta.get("profile", "")),
        stage=stage, model=cfg, tokenizer=Path(paths["tokenizer"]), tokenizer_hash=paths["tokenizer_hash"],
        shards=Path(paths["shards"]), init_from=Path(paths["init_from"]) if paths["init_from"] else None, mix=mix,
    )


def read_stage_toml(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The frozen stage.toml of a run, as data."""
    path = Path(run_dir) / STAGE_FILE
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: no such file (not a run folder)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunError(f"{path}: invalid TOML: {exc}") from None


def list_runs(ws: Workspace) -> list[Path]:
    """Run folders of the workspace (those with a stage.toml), oldest first (run ids sort by time)."""
    if not ws.runs_dir.is_dir():
        return []
    runs = [p for p in ws.runs_dir.iterdir() if p.is_dir() and (p / STAGE_FILE).exists()]
    return sorted(runs, key=lambda p: (_created_key(p), p.name))


def _created_key(run_dir: Path) -> str:
    # Run ids start with a local timestamp; that is the order of creation.
    return run_dir.name[:15]


def last_status(run_dir: str | os.PathLike) -> str:
    """The state of the run's last status event ("created" when it has none)."""
    status = tail_events(Path(run_dir) / EVENTS_FILE, {"status"}).get("status")
    return str(status.get("state", "")) if status else "created"


def read_run(run_dir: str | os.PathLike) -> RunSummary:
    """Summary of one run: state from its last status event, step and loss from its last step event."""
    run_dir = Path(run_dir)
    doc = read_stage_toml(run_dir)
    meta, stage = doc.get("run", {}), doc.get("stage", {})
    last = tail_events(run_dir / EVENTS_FILE, {"status", "step"})
    status, step_ev = last.get("status", {}), last.get("step", {})
    step = max(int(status.get("step") or 0), int(step_ev.get("step") or 0))
    loss = step_ev.get("loss")
    return RunSummary(
        run_id=run_dir.name,
        path=run_dir,
        profile=str(meta.get("profile", "")),
        stage=str(meta.get("stage", stage.get("name", ""))),
        created=str(meta.get("created", "")),
        state=str(status.get("state", "created")) if status else "created",
        step=step,
        max_steps=int(stage.get("max_steps") or status.get("max_steps") or 0),
        loss=float(loss) if isinstance(loss, (int, float)) else None,
        message=str(status.get("message", "")),
    )


def checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, folder), oldest first (temp folders are not listed)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        n = p.name[len(CKPT_PREFIX):]
        if p.name.startswith(CKPT_PREFIX) and n.isdigit() and (p / CKPT_STATE).exists():
            found.append((int(n), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = checkpoints(run_dir)
    return found[-1][1] if found else None
