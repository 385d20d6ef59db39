"""Learning-rate schedules: linear warmup, then cosine, warmup-stable-decay (wsd) or constant.

Pure functions of the 1-based optimizer step, so a resumed run gets the same rate at every step.
"""

from __future__ import annotations

import math

from engine.profile import StageConfig


def lr_at(step: int, stage: StageConfig) -> float:
    """The learning rate for optimizer step `step` (1 = the first step, `max_steps` = the last)."""
    peak, total, warmup = stage.lr, stage.max_steps, stage.warmup_steps
    low = peak * stage.min_lr_ratio
    if warmup and step <= warmup:
        return peak * step / warmup
    if stage.schedule == "constant":
        return peak
    if stage.schedule == "cosine":
        span = max(total - warmup, 1)
        progress = min(max(step - warmup, 0) / span, 1.0)
        return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # wsd: flat at the peak, then a linear decay to `low` over the last decay_fraction of the steps.
    decay_steps = max(round(stage.decay_fraction * total), 1)
    decay_start = max(total - decay_steps, warmup)
    if step <= decay_start:
        return peak
    progress = min((step - decay_start) / max(total - decay_start, 1), 1.0)
    return peak + (low - peak) * progress


def schedule_info(stage: StageConfig) -> dict:
    """The settings the schedule depends on, stored in checkpoints to show what a run used."""
    return {
        "schedule": stage.schedule, "lr": stage.lr, "min_lr_ratio": stage.min_lr_ratio,
        "warmup_steps": stage.warmup_steps, "decay_fraction": stage.decay_fraction, "max_steps": stage.max_steps,
    }
