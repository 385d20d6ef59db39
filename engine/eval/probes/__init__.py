"""Domain probes: small tasks built from held-out text whose answers a real library checks.

Each probe module has `NAME`, `DOMAIN` (the corpus domain its items come from), `VERSION`
(bumped whenever items or scoring change, so results of different versions are not compared
blindly), `build_items(texts, limit, seed)` and `check(item, completion)` (both pure, no model),
and `run(lm, texts, limit, seed)`, which asks a language model through the `LanguageModel`
interface below. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence


@dataclass
class Completion:
    """Generated text and why it ended: "eos", "stop" (the stop test), "length" or "context"."""

    text: str
    reason: str


class LanguageModel(Protocol):
    """What a probe needs from a model: greedy completions and continuation log-likelihoods."""

    def complete_many(self, prompts: Sequence[str], max_new_tokens: int,
                      stops: Sequence[Callable[[str], bool] | None]) -> list[Completion]:
        """Greedy continuation of each prompt, run together where the model can: each ends at EOS, at
        its `stop(text so far)`, or after max_new_tokens."""
        ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after its context."""
        ...


@dataclass
class ProbeResult:
    """A probe's scores over its items, with a few examples kept for reading."""

    name: str
    version: int
    metrics: dict[str, float]
    n: int
    examples: list[dict] = field(default_factory=list)


PROBES = ("chess", "code", "data", "science", "chat")
EXAMPLES_KEPT = 3


def probe_module(name: str):
    """The module of probe `name` (chess, code, data, science, chat)."""
    import importlib

    if name not in PROBES:
        from engine.errors import FcError

        raise FcError(f"probe {name!r}: expected one of {', '.join(PROBES)}")
    return importlib.import_module(f"engine.eval.probes.{name}")


def versions() -> dict[str, int]:
    """Every probe's version, as recorded with each eval."""
    return {name: probe_module(name).VERSION for name in PROBES}


def complete_items(lm: LanguageModel, items: Sequence, prompts: Sequence[str], max_new_tokens: int,
                   stops: Sequence[Callable[[str], bool] | None], check: Callable[[Any, Completion], dict],
                   example: Callable[[Any, str], dict]) -> tuple[list[dict], list[dict]]:
    """A completion probe's run: every item's verdict (`check` of its completion), and the first
    EXAMPLES_KEPT items as examples (`example(item, completion)` with the verdict)."""
    outs = lm.complete_many(prompts, max_new_tokens, stops)
    verdicts = [check(item, out) for item, out in zip(items, outs)]
    examples = [{**example(item, out.text), **v} for item, out, v in zip(items[:EXAMPLES_KEPT], outs, verdicts)]
    return verdicts, examples


def shares(verdicts: Sequence[dict], **metrics: str) -> dict[str, float]:
    """Each metric as the share of verdicts whose `metrics[metric]` key is true ({} without verdicts)."""
    n = len(verdicts)
    return {m: sum(v[key] for v in verdicts) / n for m, key in metrics.items()} if n else {}


def clip(text: str, n: int = 160) -> str:
    """The last n characters of a prompt (what an example shows)."""
    return text if len(text) <= n else "…" + text[-n:]
