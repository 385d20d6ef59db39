"""A run's frozen stage, validated: what the trainer trains and on which data.

The stage.toml that engine.jobs.runs.create_run writes resolves what the profile only names
(model shape, tokenizer hash, shard folder, init checkpoint, starting mix), so a later profile
edit never changes a run in flight. `RunDir.spec()` reads it through `parse_run_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import MixError, RunError
from engine.mix import normalise
from engine.model.config import ModelConfig
from engine.profile import StageConfig, parse_stage


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
    # Image-text data of a stage that trains the vision tower: the folder of its image shards (at the
    # tower's image size) and the run's domains that are image-text ones; None and empty otherwise.
    images: Path | None = None
    image_domains: list[str] = field(default_factory=list)

    @property
    def domains(self) -> list[str]:
        return list(self.mix)

    @property
    def text_domains(self) -> list[str]:
        return [d for d in self.mix if d not in self.image_domains]


def parse_run_spec(doc: dict[str, Any], origin: str, run_dir: Path) -> RunSpec:
    """Validate a run's frozen stage (`doc`, read from `origin`); every problem is a one-line
    RunError naming the key. The stage table is checked as a stage, by the profile's own rules."""
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
        mix = normalise(doc["mix"])
    except MixError as exc:
        raise RunError(f"{origin}: {exc}") from None
    model = doc["stage"].get("model")
    if not isinstance(model, dict):
        raise RunError(f"{origin}: stage.model: expected a table with the resolved model shape, got {model!r}")
    if "vision_params" in model:  # frozen before the tower existed: a bare parameter budget, no tower
        model = {k: v for k, v in model.items() if k != "vision_params"}
        doc = {**doc, "stage": {**doc["stage"], "model": model}}
    stage_mix = doc["stage"].get("mix")
    domains = {**dict.fromkeys(stage_mix if isinstance(stage_mix, dict) else (), 0.0), **mix}

    def fail(msg: str) -> RunError:
        return RunError(f"{origin}: {msg}")

    stage = parse_stage(doc["stage"], "stage", fail, domains)
    cfg = ModelConfig(**model)
    if cfg.vocab_size <= 0:
        raise RunError(f"{origin}: stage.model.vocab_size: expected the tokenizer's vocabulary size, got {cfg.vocab_size}")
    images, image_domains = _images(doc.get("images"), origin, cfg, list(mix))
    meta = doc["run"]
    return RunSpec(
        run_dir=run_dir, run_id=str(meta.get("id") or run_dir.name), profile=str(meta.get("profile", "")),
        stage=stage, model=cfg, tokenizer=Path(paths["tokenizer"]), tokenizer_hash=paths["tokenizer_hash"],
        shards=Path(paths["shards"]), init_from=Path(paths["init_from"]) if paths["init_from"] else None, mix=mix,
        images=images, image_domains=image_domains,
    )


def _images(table: Any, origin: str, cfg: ModelConfig, domains: list[str]) -> tuple[Path | None, list[str]]:
    """The optional [images] table: {dir, domains} of a stage that trains with images."""
    if table is None:
        return None, []
    if not isinstance(table, dict) or not isinstance(table.get("dir"), str) or not table["dir"]:
        raise RunError(f"{origin}: images.dir: expected the folder of the image shards")
    names = table.get("domains")
    if not isinstance(names, list) or not names or any(n not in domains for n in names):
        raise RunError(f"{origin}: images.domains: expected a non-empty list of the run's domains "
                       f"({', '.join(domains)}), got {names!r}")
    if not cfg.has_vision:
        raise RunError(f"{origin}: images: the stage trains with images but stage.model has no vision tower")
    return Path(table["dir"]), list(names)
