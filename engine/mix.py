"""The domain mix: the one rule for a mix wherever it enters (profile, stage.toml, a control request,
the `fcwork mix` arguments, the Manifest pane) and the one way it is printed.

A mix is a table of domain = weight: each domain a name of letters, digits, '_', '-' or '.';
each weight a finite number >= 0 (a bool is not a number); at least one weight > 0. Weights are
relative: `normalise` scales them to sum to 1, and a weight of 0 switches a domain off.

Errors are `MixError`s whose message is the key path and what was expected, with no file in
front (`mix.code: expected a non-negative number, got -1`); each caller prefixes where the mix
came from and re-raises its own error class.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

from engine.errors import MixError, describe_value

DOMAIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# How an unknown domain is reported; `{domains_of}` names the set the domain must be in.
UNKNOWN_DOMAIN = "expected a domain of {domains_of} ({known})"


def check_mix(
    value: Any,
    domains: Iterable[str] | None = None,
    key: str = "mix",
    *,
    domains_of: str = "the run",
    unknown: str = UNKNOWN_DOMAIN,
) -> dict[str, float]:
    """`value` checked as a mix and returned as floats, in its order (not normalised).

    With `domains`, every domain must be one of them; the error is `unknown` with `domains_of`
    naming that set (`[mix]`, `the run`) and `known` listing it. `key` is the key path the
    errors name (`stages[1].mix`).
    """
    if not isinstance(value, Mapping):
        raise MixError(f"{key}: expected a table of domain = weight, got {describe_value(value)}")
    known = None if domains is None else list(domains)
    out = {d: _weight(d, w, key, known, domains_of, unknown) for d, w in value.items()}
    _any_positive(out, key)
    return out


def normalise(mix: Mapping[str, Any], key: str = "mix") -> dict[str, float]:
    """The mix scaled to sum to 1, in its order; refuses what `check_mix` refuses."""
    weights = check_mix(mix, key=key)
    total = sum(weights.values())
    if not math.isfinite(total):  # finite weights whose sum overflows: scale them down first
        top = max(weights.values())
        weights = {d: w / top for d, w in weights.items()}
        total = sum(weights.values())
    return {d: w / total for d, w in weights.items()}


def parse_weights(
    texts: Mapping[str, str], domains: Iterable[str] | None = None, key: str = "mix", *, domains_of: str = "the run"
) -> dict[str, float]:
    """Weights typed as text ({domain: "0.5"}) into a checked mix (as in the Manifest pane)."""
    return check_mix({d: _number(t) for d, t in texts.items()}, domains, key, domains_of=domains_of)


def parse_pairs(
    pairs: Iterable[str], domains: Iterable[str] | None = None, key: str = "mix", *, domains_of: str = "the run",
    partial: bool = False,
) -> dict[str, float]:
    """`science=0.5 code=0.3` arguments into a checked mix (a domain given twice: the last wins).
    With `partial` they are changes to a mix (see `merge`), which may all be 0.

    The argument at fault is the origin of an error, so it is the message's prefix
    (`chess=1: mix.chess: expected a domain of the run (code, science)`).
    """
    pairs = list(pairs)
    known = None if domains is None else list(domains)
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        try:
            if not sep or not name:
                raise MixError(f"{key}: expected DOMAIN=WEIGHT")
            out[name] = _weight(name, _number(text), key, known, domains_of, UNKNOWN_DOMAIN)
        except MixError as exc:
            raise MixError(f"{pair}: {exc}") from None
    try:
        if not partial or not out:
            _any_positive(out, key)
    except MixError as exc:
        raise MixError(f"{' '.join(pairs)}: {exc}" if pairs else str(exc)) from None
    return out


def merge(current: Mapping[str, float], changes: Mapping[str, float], only: bool = False,
          key: str = "mix") -> dict[str, float]:
    """A mix edit as a user means it, normalised: the domains named in `changes` take their new
    weights and every other domain of `current` keeps its weight (`only`: drops to 0). `current`
    is in force (it sums to 1 or not, only its ratios count); the result is in its order, then
    any new domains in theirs. Refuses what `check_mix` refuses (all weights 0, ...)."""
    if only:
        out = {d: 0.0 for d in current}
    else:
        out = dict(normalise(current, key)) if any(w > 0 for w in current.values()) else dict(current)
    out.update(changes)
    return normalise(out, key)


def describe(mix: Mapping[str, float], digits: int | None = 3) -> str:
    """The mix on one line, `science=0.300 code=0.700`; with `digits=None` each weight exactly as
    short as it reads back (`parse_pairs` of the words gives the same floats)."""
    return " ".join(f"{d}={_fmt(w, digits)}" for d, w in mix.items())


def _weight(domain: Any, w: Any, key: str, known: list[str] | None, domains_of: str, unknown: str) -> float:
    """One entry of a mix checked: its name, that it is a known domain, its weight."""
    if not isinstance(domain, str) or not DOMAIN_RE.fullmatch(domain):
        raise MixError(f"{key}: expected a domain name of letters, digits, '_', '-' or '.', "
                       f"got {describe_value(domain)}")
    if known is not None and domain not in known:
        raise MixError(f"{key}.{domain}: " + unknown.format(domains_of=domains_of, known=", ".join(known)))
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
        raise MixError(f"{key}.{domain}: expected a non-negative number, got {describe_value(w)}")
    return float(w)


def _any_positive(weights: Mapping[str, float], key: str) -> None:
    if not weights:
        raise MixError(f"{key}: expected at least one positive weight, got an empty table")
    if not any(w > 0 for w in weights.values()):
        raise MixError(f"{key}: expected at least one positive weight, got all zero")


def _number(text: str) -> float | str:
    """Typed text as a float, or the text itself (stripped) for the check to refuse and quote."""
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _fmt(w: float, digits: int | None) -> str:
    if digits is not None:
        return f"{w:.{digits}f}"
    return repr(float(w)).removesuffix(".0")
