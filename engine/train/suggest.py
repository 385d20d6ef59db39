"""Mix suggestions from the per-domain held-out loss: the next mix the stage could train on, and why.

The policy (Plan.md, "Mix suggestions") is DoReMi's exponentiated-gradient step on domain weights with
an excess-loss signal measured without a reference model: a domain's held-out bits per byte above the
mean of the domains in the mix counts as excess only while its loss still falls (a domain whose loss
has gone flat gets no more data, however high it is). Bounds the owner sets in the stage: a floor and
a ceiling per weight, the largest change per suggestion, and the epoch ceiling (a domain near its
`mix_max_epochs` passes is never raised). A domain switched off (weight 0) stays off.

Pure and torch-free: the trainer (rank 0) calls `suggest` at its eval points with the last evals it
kept (`PolicyState`, saved in each checkpoint), so a resumed run makes the same suggestions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

ETA = 3.0          # step size of the multiplicative update (bounds cap its effect per suggestion)
FLAT = 0.25        # a loss falling at under this fraction of the mean rate counts as flat
NEAR_CEILING = 0.9  # a domain at this fraction of its epoch ceiling is never raised
MIN_CHANGE = 0.005  # smaller moves are left out: no suggestion is made of noise
KEEP_EVALS = 3


@dataclass(frozen=True)
class Bounds:
    """What the owner lets a suggestion do (the stage's mix_min, mix_max, mix_max_change, mix_max_epochs)."""

    min_weight: float = 0.02
    max_weight: float = 0.6
    max_change: float = 0.1
    max_epochs: float = 4.0

    @classmethod
    def of_stage(cls, st: Any) -> "Bounds":
        return cls(st.mix_min, st.mix_max, st.mix_max_change, st.mix_max_epochs or 4.0)


@dataclass
class Suggestion:
    """A proposed mix made at eval `step` (it would train from step + 1), with a line per changed domain."""

    step: int
    mix: dict[str, float]
    current: dict[str, float]
    reasons: dict[str, str]

    def event_fields(self) -> dict[str, Any]:
        return {"step": self.step, "mix": self.mix, "current": self.current, "reasons": self.reasons}


@dataclass(frozen=True)
class AutoMix:
    """A mix an auto stage put in force from `step`, as rank 0 hands it to the other ranks."""

    step: int
    mix: dict[str, float]


@dataclass
class PolicyState:
    """The last evals the policy judges trends by: [(step, {domain: bits per byte or loss})]."""

    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def add(self, step: int, values: Mapping[str, float]) -> None:
        self.evals = [e for e in self.evals if e[0] < step][-(KEEP_EVALS - 1):] + [(step, dict(values))]

    def to_dict(self) -> dict[str, Any]:
        return {"evals": [[s, v] for s, v in self.evals]}

    @classmethod
    def from_dict(cls, data: Any) -> "PolicyState":
        """Lenient: a checkpoint without it (or a malformed one) starts with no history."""
        evals = []
        for item in (data or {}).get("evals", []) if isinstance(data, dict) else []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and isinstance(item[1], dict):
                evals.append((item[0], {str(d): float(v) for d, v in item[1].items()}))
        return cls(evals)


def suggest(state: PolicyState, current: Mapping[str, float], epochs: Mapping[str, float],
            bounds: Bounds, unit: str = "bpb") -> Suggestion | None:
    """The next mix from the last two evals in `state`, or None when there is no trend yet or no
    domain would move by MIN_CHANGE. `current` is the mix in force (normalised here)."""
    if len(state.evals) < 2:
        return None
    (_, before), (step, now) = state.evals[-2], state.evals[-1]
    total = sum(current.values()) or 1.0
    cur = {d: w / total for d, w in current.items()}
    active = [d for d, w in cur.items() if w > 0 and d in now and d in before and before[d] > 0]
    if len(active) < 2:
        return None
    level = {d: now[d] for d in active}
    mean_level = sum(level.values()) / len(active)
    drop = {d: (before[d] - now[d]) / before[d] for d in active}  # relative fall over the interval
    mean_drop = sum(drop.values()) / len(active)
    gap = {d: level[d] / mean_level - 1 for d in active}
    pace = {d: (drop[d] / mean_drop if mean_drop > 0 else 1.0) for d in active}
    flat = {d for d in active if gap[d] > 0 and pace[d] < FLAT}  # high but flat: more of it buys little
    score = {d: 0.0 if d in flat else gap[d] for d in active}
    target = {d: cur[d] * math.exp(ETA * score[d]) for d in active}
    norm = sum(target.values())
    target = {d: t / norm for d, t in target.items()}
    lo, hi, ceiling = {}, {}, set()
    for d in active:
        lo[d] = max(min(bounds.min_weight, cur[d]), cur[d] - bounds.max_change)
        hi[d] = min(max(bounds.max_weight, cur[d]), cur[d] + bounds.max_change)
        if epochs.get(d, 0.0) >= NEAR_CEILING * bounds.max_epochs:
            ceiling.add(d)
        if d in ceiling or d in flat:
            hi[d] = cur[d]
    share = sum(cur[d] for d in active)  # of the whole mix; domains off stay off
    proposed = _project(target, lo, hi, share)
    mix = {d: (round(proposed[d], 4) if d in proposed else 0.0) for d in cur}
    changed = sorted((d for d in active if abs(mix[d] - cur[d]) >= MIN_CHANGE), key=lambda d: cur[d] - mix[d])
    if not changed:
        return None
    reasons = {d: _reason(d, cur[d], mix[d], f"{level[d]:.3f} {unit}", gap[d], pace[d], bounds) for d in changed}
    for d in ceiling & set(changed):
        reasons[d] += f"; near its epoch ceiling ({epochs.get(d, 0.0):.1f} of {bounds.max_epochs:g} passes)"
    return Suggestion(step=step, mix=mix, current={d: round(w, 4) for d, w in cur.items()}, reasons=reasons)


def _project(target: dict[str, float], lo: dict[str, float], hi: dict[str, float], total: float) -> dict[str, float]:
    """The weights clip(target + tau, lo, hi) that sum to `total` (tau by bisection: the sum grows with
    tau; sum(lo) <= total <= sum(hi) holds since lo <= current <= hi)."""
    a, b = -1.0, 1.0
    for _ in range(100):
        tau = (a + b) / 2
        s = sum(min(max(target[d] + tau, lo[d]), hi[d]) for d in target)
        a, b = (tau, b) if s < total else (a, tau)
    tau = (a + b) / 2
    return {d: min(max(target[d] + tau, lo[d]), hi[d]) for d in target}


def _reason(domain: str, old: float, new: float, level: str, gap: float, pace: float, b: Bounds) -> str:
    """One line: what in the domain's held-out loss moves its weight (the move itself is mix vs current)."""
    where = f"held-out {level}, {abs(gap):.0%} {'above' if gap >= 0 else 'below'} the mean"
    falling = f"falling {pace:.1f}x the others' rate" if pace > 0 else "not falling"
    if new > old:
        why = f"{domain}: {where}, still {falling}"
    elif gap > 0:
        why = f"{domain}: {where} but flat ({falling})"
    else:
        why = f"{domain}: {where} ({falling})"
    if new >= b.max_weight - 1e-9:
        why += f"; at mix_max {b.max_weight:g}"
    elif new <= b.min_weight + 1e-9 and new < old:
        why += f"; at mix_min {b.min_weight:g}"
    return why
