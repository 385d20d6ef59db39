"""Suites of standard benchmarks (engine.lmeval): the centred aggregate, suite names, the profile's
own suites. The end-to-end run of a suite on a real run is in tests/test_eval.py (its workspace)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ProfileError
from engine.lmeval import (
    LOCAL_TASKS,
    SUITES,
    SuiteError,
    aggregate,
    centred,
    latest_suites,
    main_metric,
    profile_suites,
    suite_tasks,
)
from engine.profile import loads_profile

PROFILE = """
[profile]
name = "p"
[mix]
code = 1
"""


def test_centred_is_zero_at_chance_and_one_when_perfect():
    assert centred(0.25, 0.25) == 0 and centred(1.0, 0.25) == 1 and centred(0.5, 0.5) == 0
    assert centred(0.625, 0.25) == pytest.approx(0.5)
    assert centred(0.0, 0.25) == pytest.approx(-1 / 3)  # worse than guessing stays visible
    assert centred(0.3, 0.0) == pytest.approx(0.3)  # generation: no chance level
    assert centred(None, 0.25) is None and centred(float("nan"), 0.25) is None


@given(st.floats(0, 1), st.floats(0, 0.99))
def test_centred_keeps_order_and_maps_chance_and_perfect(score, chance):
    c = centred(score, chance)
    assert math.isclose(c * (1 - chance) + chance, score, abs_tol=1e-9)
    assert (c > 0) == (score > chance) or math.isclose(score, chance, abs_tol=1e-12)


def test_aggregate_is_the_mean_of_the_centred_scores_like_core():
    tasks = {"arc_easy": {"score": 0.55, "chance": 0.25, "centred": centred(0.55, 0.25)},
             "piqa": {"score": 0.5, "chance": 0.5, "centred": centred(0.5, 0.5)},
             "broken": {"score": None, "chance": 0.25, "centred": None}}
    assert aggregate(tasks) == pytest.approx((0.4 + 0.0) / 2)
    assert aggregate({}) is None


def test_main_metric_prefers_length_normalised_accuracy():
    assert main_metric({"acc": 0.4, "acc_norm": 0.5}) == "acc_norm"
    assert main_metric({"acc": 0.4}) == "acc"
    assert main_metric({"pass@1": 0.1}) == "pass@1"
    assert main_metric({"bleu": 3.0}) == "bleu" and main_metric({}) is None


def test_suites_are_named_in_one_place_and_the_profile_adds_its_own(tmp_path):
    assert suite_tasks("core") == ("arc_easy", "hellaswag", "piqa", "sciq") and "humaneval" in SUITES["code"]
    assert (LOCAL_TASKS / "fc_tiny_mc.yaml").exists() and (LOCAL_TASKS / "fc_tiny_mc.jsonl").exists()
    with pytest.raises(SuiteError, match=r"^--suite 'nope': expected one of core, code, local$"):
        suite_tasks("nope")
    path = tmp_path / "p.toml"
    prof = loads_profile(PROFILE + '[eval]\nsuites = { mine = ["fc_tiny_mc", "arc_easy"] }\ntask_paths = ["tasks"]\n',
                         str(path), path)
    suites, paths = profile_suites(prof)
    assert suite_tasks("mine", suites) == ("fc_tiny_mc", "arc_easy") and paths == [tmp_path / "tasks"]
    for text, message in (('suites = { mine = [] }', "eval.suites.mine: expected a non-empty list"),
                          ('suites = { mine = "arc_easy" }',
                           r'eval.suites: expected a table of NAME = \["task", ...\], got a table\b'),
                          ('task_paths = "tasks"', "eval.task_paths: expected a list of strings"),
                          ('suite = {}', "eval.suite: unknown key")):
        with pytest.raises(ProfileError, match=message):
            loads_profile(PROFILE + "[eval]\n" + text + "\n", "p.toml")


def test_latest_suites_keeps_the_newest_record_of_each_suite():
    recs = [{"kind": "suite", "suite": "core", "step": 1}, {"metrics": {}, "step": 2},
            {"kind": "suite", "suite": "local", "step": 2}, {"kind": "suite", "suite": "core", "step": 3}]
    assert {k: r["step"] for k, r in latest_suites(recs).items()} == {"core": 3, "local": 2}
