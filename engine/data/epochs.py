"""Passes over each domain's data: how many times a stage reads each domain's training tokens.

passes = stage tokens x the domain's share of the stage's mix / the domain's training tokens.
Stage tokens are max_steps x grad_accum x micro_batch x seq_len. A domain's tokens come from
its shard when one exists, else from the built corpus (characters / chars_per_token), else from
the plan (its budget less the held-out fraction), and each figure says which. Past
`data.warn_epochs` passes (4 by default) a stage mostly memorises that domain: `fcwork queue add`
warns before the stage starts. `running_epochs` is the same measure for what a run has drawn.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Mapping

from engine.data.corpus import domain_quotas, read_manifest
from engine.data.shards import shard_counts
from engine.errors import ShardError
from engine.profile import Profile, StageConfig, normalise_mix
from engine.workspace import Workspace


@dataclass(frozen=True)
class DomainPasses:
    """One domain's side of a stage."""

    domain: str
    share: float  # the domain's weight in the stage's starting mix, normalised
    stage_tokens: int  # tokens the stage draws from the domain
    domain_tokens: int  # training tokens the domain holds (0: none)
    basis: str  # where domain_tokens comes from: "shards", "corpus" or "plan"; for an image-text domain
    # "pairs" (built) or "images planned", and stage_tokens and domain_tokens count images drawn and pairs
    passes: float  # stage_tokens / domain_tokens (inf when the domain has no tokens but a share)


def stage_tokens(stage: StageConfig) -> int:
    """Tokens a stage trains on: steps x accumulation x micro-batch x sequence length."""
    return stage.max_steps * stage.grad_accum * stage.micro_batch * stage.seq_len


def stage_mix(profile: Profile, stage: StageConfig) -> dict[str, float]:
    """The stage's starting mix, normalised: its own `mix` when it has one, else the profile's."""
    mix = stage.mix if stage.mix and sum(stage.mix.values()) > 0 else profile.mix
    return {d: w for d, w in normalise_mix(mix).items() if w > 0}


def domain_tokens(ws: Workspace, profile: Profile) -> dict[str, tuple[int, str]]:
    """Training tokens per domain and their basis: shard headers, else the corpus manifest, else the plan."""
    out: dict[str, tuple[int, str]] = {}
    manifest = read_manifest(ws.raw_dir(profile.name)) or {}
    built = manifest.get("domains", {})
    cpt = profile.data.chars_per_token
    for dom, chars in domain_quotas(profile).items():
        out[dom] = (int(chars * (1 - profile.data.heldout_fraction) / cpt), "plan")
    for dom, m in built.items():
        out[dom] = (int(m.get("chars", 0) / cpt), "corpus")
    tok_dir = ws.tok_dir(profile.name)
    for dom in list(out) + [d for d in profile.mix if d not in out]:
        if (tok_dir / f"{dom}.bin").exists():
            with contextlib.suppress(ShardError):
                out[dom] = (shard_counts(tok_dir / dom)[0], "shards")
    return out


def stage_passes(ws: Workspace, profile: Profile, stage_name: str) -> list[DomainPasses]:
    """Passes the stage makes over each domain of its starting mix, in the mix's order."""
    stage = profile.stage(stage_name)
    total = stage_tokens(stage)
    have = domain_tokens(ws, profile)
    images, image_basis = _image_pairs(ws, profile, stage) if profile.image_domains else ({}, "pairs")
    micro_batches = stage.max_steps * stage.grad_accum * stage.world_size
    rows = []
    for dom, share in stage_mix(profile, stage).items():
        if dom in profile.image_domains:  # an image-text domain: images drawn (share of micro-batches) / pairs
            pairs = images.get(dom, 0)
            drawn = int(micro_batches * share)
            rows.append(DomainPasses(dom, share, drawn, pairs, image_basis, drawn / pairs if pairs else float("inf")))
            continue
        tokens, basis = have.get(dom, (0, "plan"))
        drawn = int(total * share)
        rows.append(DomainPasses(dom, share, drawn, tokens, basis, drawn / tokens if tokens else float("inf")))
    return rows


def _image_pairs(ws: Workspace, profile: Profile, stage: StageConfig) -> tuple[dict[str, int], str]:
    """Training pairs per image-text domain and their basis: the image build at the stage's tower size
    (else `data.image_size`), "pairs"; before a build, the images the sources are capped at
    (`max_docs`, at least one caption each; an uncapped source counts 0), "images planned"."""
    from engine.data.imagedata import read_image_manifest

    size = stage.model_config().image_size if stage.model_config().has_vision else None
    manifest = read_image_manifest(ws, profile, size) or read_image_manifest(ws, profile) or {}
    built = {d: int(m.get("pairs", 0)) for d, m in (manifest.get("domains") or {}).items() if isinstance(m, dict)}
    if built:
        return built, "pairs"
    planned: dict[str, int] = {}
    for src in profile.sources:
        if src.is_image:
            planned[src.domain] = planned.get(src.domain, 0) + src.max_docs
    return planned, "images planned"


def epoch_warnings(profile: Profile, stage_name: str, rows: list[DomainPasses]) -> list[str]:
    """One line per domain the stage passes over more than `data.warn_epochs` times."""
    limit = profile.data.warn_epochs
    out = []
    for r in rows:
        if r.passes > limit:
            times = "with no data" if r.domain_tokens == 0 else f"{r.passes:.1f} times"
            if r.basis in ("pairs", "images planned"):
                out.append(f"{profile.path or profile.name}: stage {stage_name}: passes over {r.domain} {times} "
                           f"({r.stage_tokens:,} images drawn from {r.domain_tokens:,} {r.basis.split()[0]}; more than "
                           f"data.warn_epochs = {limit:g}): add image-text pairs (max_docs of the built-in ones), "
                           f"or lower max_steps or its mix weight")
                continue
            out.append(f"{profile.path or profile.name}: stage {stage_name}: passes over {r.domain} {times} "
                       f"({r.stage_tokens:,} tokens drawn from {r.domain_tokens:,} [{r.basis}]; more than "
                       f"data.warn_epochs = {limit:g}): grow data.target_tokens or that domain's share, or lower "
                       f"max_steps or its mix weight")
    return out


def running_epochs(tokens_drawn: Mapping[str, int], tokens_held: Mapping[str, int]) -> dict[str, float]:
    """Passes made so far per domain: tokens drawn from it / its training tokens (for events)."""
    return {d: (n / tokens_held[d] if tokens_held.get(d) else 0.0) for d, n in tokens_drawn.items()}


def format_passes(rows: list[DomainPasses]) -> str:
    """`science 1.2x, code 0.8x` for a one-line display."""
    return ", ".join(f"{r.domain} {r.passes:.1f}x" if r.domain_tokens else f"{r.domain} no data" for r in rows)
