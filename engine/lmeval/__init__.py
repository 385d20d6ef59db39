"""Standard benchmarks through lm-evaluation-harness, on a run's Hugging Face export.

A suite is a named list of lm-eval tasks (`SUITES`, plus a profile's `[eval.suites]`); running
one (`engine.lmeval.runner.run_suite`) exports the checkpoint as an HF folder (or reuses that
export), scores it with lm-eval's own HF model class and appends a `kind = "suite"` record to
the run's evals.jsonl. Each task's main score is centred on its chance level like nanochat's
CORE, (score - chance) / (1 - chance), and the suite's aggregate is their mean: 0 is chance,
1 is perfect, whatever the number of choices.

This package imports neither lm_eval nor torch (lm_eval takes seconds to import): the
Eval pane and `fcwork eval compare` read the records with it; only `runner` imports lm_eval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.errors import FcError

# Tasks lm-eval downloads on first use (from the Hugging Face hub), except `local`, which is
# ours and offline. `core` is the multiple-choice set people quote for small base models.
SUITES: dict[str, tuple[str, ...]] = {
    "core": ("arc_easy", "hellaswag", "piqa", "sciq"),
    "code": ("humaneval",),
    "local": ("fc_tiny_mc",),
}
# Our own task configs (YAML + jsonl), read by lm-eval's TaskManager through include_path.
LOCAL_TASKS = Path(__file__).resolve().parent / "tasks"
# The score a task is centred and ranked on, the first of these it reports: length-normalised
# accuracy where lm-eval computes it (what papers quote for hellaswag, arc, piqa, sciq).
MAIN_METRICS = ("acc_norm", "acc", "pass@1", "exact_match", "f1")
SUITE_KIND = "suite"


class SuiteError(FcError):
    """A suite or one of its tasks cannot run: unknown, not downloadable, or not allowed."""


def suite_tasks(name: str, extra: Mapping[str, Sequence[str]] | None = None) -> tuple[str, ...]:
    """The tasks of suite `name`: one of SUITES or of `extra` (a profile's suites win on a clash)."""
    known = {**SUITES, **(extra or {})}
    if name not in known:
        raise SuiteError(f"--suite {name!r}: expected one of {', '.join(known)}")
    return tuple(known[name])


def centred(score: float | None, chance: float) -> float | None:
    """(score - chance) / (1 - chance): 0 at chance, 1 perfect, below 0 worse than guessing."""
    if score is None or not math.isfinite(score) or chance >= 1:
        return None
    return (score - chance) / (1 - chance)


def aggregate(tasks: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The suite's centred score: the mean of its tasks' centred scores (None: no task scored)."""
    values = [t["centred"] for t in tasks.values() if isinstance(t.get("centred"), (int, float))]
    return sum(values) / len(values) if values else None


def main_metric(metrics: Mapping[str, float]) -> str | None:
    """The metric a task is ranked on: the first of MAIN_METRICS it has, else its first one."""
    return next((name for name in MAIN_METRICS if name in metrics), next(iter(metrics), None))


def is_suite_record(rec: Mapping[str, Any]) -> bool:
    """True for an evals.jsonl record of a suite (the harness's records have no `kind`)."""
    return rec.get("kind") == SUITE_KIND


def latest_suites(recs: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The newest record of each suite among a run's evals.jsonl records, in first-run order."""
    return {str(rec.get("suite")): rec for rec in recs if is_suite_record(rec)}


def profile_suites(profile) -> tuple[dict[str, list[str]], list[Path]]:
    """A profile's `[eval]` suites and its task folders (relative ones from the profile's folder)."""
    base = profile.path.parent if profile.path else Path.cwd()
    paths = [(base / Path(p).expanduser()).resolve() for p in profile.eval.task_paths]
    return dict(profile.eval.suites), paths
