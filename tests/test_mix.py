"""The mix rule (engine.mix): what a mix may hold, how it is normalised, parsed and printed, and
that every place a mix enters reports the same one-line message behind its own origin."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.errors import ControlError, MixError, ProfileError
from engine.jobs.control import parse_request
from engine.mix import check_mix, describe, normalise, parse_pairs, parse_weights
from engine.profile import loads_profile

DOMAINS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,11}", fullmatch=True)
WEIGHTS = st.one_of(st.just(0.0), st.floats(1e-6, 1e6), st.integers(0, 10**6))
MIXES = st.dictionaries(DOMAINS, WEIGHTS, min_size=1, max_size=8).filter(lambda m: any(w > 0 for w in m.values()))
NAME_RULE = "expected a domain name of letters, digits, '_', '-' or '.'"
BAD_WEIGHTS = st.one_of(
    st.floats(max_value=-1e-300, allow_nan=False),  # negative, -inf included
    st.just(math.nan), st.just(math.inf), st.booleans(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2),
    st.integers(max_value=-1),
)


def message(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


# -- check_mix ------------------------------------------------------------------------------

def test_check_mix_returns_floats_in_the_given_order():
    out = check_mix({"science": 3, "code": 0, "chess": 0.5})
    assert out == {"science": 3.0, "code": 0.0, "chess": 0.5}
    assert list(out) == ["science", "code", "chess"] and all(type(w) is float for w in out.values())


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, "mix: expected a table of domain = weight, got 3"),
        (None, "mix: expected a table of domain = weight, got nothing"),
        ([1, 2], "mix: expected a table of domain = weight, got a list"),
        ({}, "mix: expected at least one positive weight, got an empty table"),
        ({"a": 0, "b": 0.0}, "mix: expected at least one positive weight, got all zero"),
        ({"code": -1}, "mix.code: expected a non-negative number, got -1"),
        ({"code": "lots"}, 'mix.code: expected a non-negative number, got "lots"'),
        ({"code": True}, "mix.code: expected a non-negative number, got true"),
        ({"code": math.nan}, "mix.code: expected a non-negative number, got nan"),
        ({"code": math.inf}, "mix.code: expected a non-negative number, got inf"),
        ({"bad name": 1}, f'mix: {NAME_RULE}, got "bad name"'),
        ({"code\n": 1}, f'mix: {NAME_RULE}, got "code\\n"'),
        ({"-x": 1}, f'mix: {NAME_RULE}, got "-x"'),
        ({"": 1}, f'mix: {NAME_RULE}, got ""'),
        ({1: 1}, f"mix: {NAME_RULE}, got 1"),
    ],
)
def test_check_mix_refusals_are_one_line_without_a_file(value, expected):
    with pytest.raises(MixError) as err:
        check_mix(value)
    assert expected in message(err)
    assert message(err).startswith("mix")


def test_unknown_domain_names_the_known_ones():
    with pytest.raises(MixError) as err:
        check_mix({"code": 1, "math": 1}, ["code", "science"])
    assert message(err) == "mix.math: expected a domain of the run (code, science)"
    with pytest.raises(MixError) as err:
        check_mix({"math": 1}, ["code"], "stages[2].mix", domains_of="[mix]")
    assert message(err) == "stages[2].mix.math: expected a domain of [mix] (code)"
    assert check_mix({"code": 1}, ["code", "science"]) == {"code": 1.0}


@settings(max_examples=80, deadline=None)
@given(mix=MIXES, data=st.data())
def test_any_bad_weight_is_refused_naming_its_key(mix, data):
    domain = data.draw(st.sampled_from(sorted(mix)))
    bad = data.draw(BAD_WEIGHTS)
    key = data.draw(st.sampled_from(["mix", "stages[3].mix"]))
    with pytest.raises(MixError) as err:
        check_mix({**mix, domain: bad}, key=key)
    assert message(err).startswith(f"{key}.{domain}: expected a non-negative number, got ")


@settings(max_examples=40, deadline=None)
@given(domains=st.lists(DOMAINS, min_size=1, max_size=6, unique=True), data=st.data())
def test_all_zero_is_refused(domains, data):
    zeros = {d: data.draw(st.sampled_from([0, 0.0, -0.0])) for d in domains}
    for f in (check_mix, normalise):
        with pytest.raises(MixError) as err:
            f(zeros)
        assert message(err) == "mix: expected at least one positive weight, got all zero"


@settings(max_examples=40, deadline=None)
@given(mix=MIXES, extra=DOMAINS)
def test_a_domain_outside_the_known_ones_is_named_with_them(mix, extra):
    assume(extra not in mix)
    known = list(mix)
    with pytest.raises(MixError) as err:
        check_mix({**mix, extra: 1.0}, known)
    assert message(err) == f"mix.{extra}: expected a domain of the run ({', '.join(known)})"


# -- normalise ------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(mix=MIXES)
def test_normalise_sums_to_one_and_keeps_ratios_and_order(mix):
    out = normalise(mix)
    assert list(out) == list(mix)
    assert abs(sum(out.values()) - 1.0) <= 1e-9
    total = sum(mix.values())
    for d, w in mix.items():
        assert math.isclose(out[d], w / total, rel_tol=1e-12, abs_tol=0.0)
        assert (out[d] == 0) == (w == 0)
    positive = [d for d, w in mix.items() if w > 0]
    for a in positive:
        assert math.isclose(out[a] / out[positive[0]], mix[a] / mix[positive[0]], rel_tol=1e-9)


def test_normalise_examples_and_huge_weights():
    assert normalise({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    assert normalise({"a": 1e308, "b": 1e308, "c": 0}) == {"a": 0.5, "b": 0.5, "c": 0.0}
    with pytest.raises(MixError, match=r"^mix\.b: expected a non-negative number, got -1$"):
        normalise({"a": 1, "b": -1})


# -- text: parse_weights, parse_pairs, describe ---------------------------------------------

def test_parse_weights_reads_typed_text():
    assert parse_weights({"code": " 0.5", "science": "2"}) == {"code": 0.5, "science": 2.0}
    with pytest.raises(MixError) as err:
        parse_weights({"code": "abc", "science": "1"})
    assert message(err) == 'mix.code: expected a non-negative number, got "abc"'
    with pytest.raises(MixError) as err:
        parse_weights({"code": "", "science": "1"})
    assert message(err) == 'mix.code: expected a non-negative number, got ""'
    with pytest.raises(MixError, match="got all zero"):
        parse_weights({"code": "0", "science": "0.0"})


@pytest.mark.parametrize(
    "pairs, expected",
    [
        (["science"], "science: mix: expected DOMAIN=WEIGHT"),
        (["=1"], "=1: mix: expected DOMAIN=WEIGHT"),
        (["chess=1"], "chess=1: mix.chess: expected a domain of the run (code, science)"),
        (["code=abc"], 'code=abc: mix.code: expected a non-negative number, got "abc"'),
        (["code=-1"], "code=-1: mix.code: expected a non-negative number, got -1.0"),
        (["code=inf"], "code=inf: mix.code: expected a non-negative number, got inf"),
        (["code=nan"], "code=nan: mix.code: expected a non-negative number, got nan"),
        (["code=0", "science=0"], "code=0 science=0: mix: expected at least one positive weight, got all zero"),
    ],
)
def test_parse_pairs_errors_name_the_argument(pairs, expected):
    with pytest.raises(MixError) as err:
        parse_pairs(pairs, ["code", "science"])
    assert message(err) == expected


def test_parse_pairs_keeps_the_given_domains_only():
    assert parse_pairs(["science=0.5", "code=3"], ["code", "science", "chess"]) == {"science": 0.5, "code": 3.0}
    assert parse_pairs(["code=1", "code=2"]) == {"code": 2.0}  # the last one wins


def test_describe():
    mix = {"science": 0.3, "code": 0.7, "chess": 0.0}
    assert describe(mix) == "science=0.300 code=0.700 chess=0.000"
    assert describe(mix, digits=2) == "science=0.30 code=0.70 chess=0.00"
    assert describe({"code": 3.0, "science": 1, "x": 0.1}, digits=None) == "code=3 science=1 x=0.1"
    assert describe({}) == ""


@settings(max_examples=150, deadline=None)
@given(mix=MIXES)
def test_parse_pairs_reads_back_what_describe_prints(mix):
    mix = check_mix(mix)
    assert parse_pairs(describe(mix, digits=None).split(), list(mix)) == mix
    rounded = parse_pairs(describe(mix, digits=3).split()) if any(round(w, 3) > 0 for w in mix.values()) else None
    if rounded is not None:
        assert all(abs(rounded[d] - w) <= 0.0005 + 1e-9 * w for d, w in mix.items())


# -- every entry point: the same message behind its own origin ------------------------------

PROFILE = '[profile]\nname = "t"\n[mix]\n{mix}\n[[sources]]\nname = "s"\ndomain = "code"\nformat = "text"\npath = "*.py"\n'


@pytest.mark.parametrize(
    "table, expected",
    [
        ("code = 1\nscience = -0.5", "mix.science: expected a non-negative number, got -0.5"),
        ("code = 0\nscience = 0", "mix: expected at least one positive weight, got all zero"),
        ('code = 1\nscience = "x"', 'mix.science: expected a non-negative number, got "x"'),
        ("code = 1\nscience = nan", "mix.science: expected a non-negative number, got nan"),
        ("code = 1\nscience = true", "mix.science: expected a non-negative number, got true"),
    ],
)
def test_profile_and_control_give_the_rule_message_after_their_file(table, expected):
    with pytest.raises(ProfileError) as err:
        loads_profile(PROFILE.format(mix=table), "profiles/x.toml")
    assert message(err) == f"profiles/x.toml: {expected}"
    with pytest.raises(ControlError) as err:
        parse_request(f"[mix]\n{table}\n", 1, "runs/r/requests/00000001.toml", ["code", "science"])
    assert message(err) == f"runs/r/requests/00000001.toml: {expected}"
