"""Mix suggestions: the policy's bounds (floor, ceiling, largest change, epoch ceiling, domains off stay
off), its reasons, the stage keys, the suggestion event folded by RunHistory, and an auto stage that
applies its own suggestions and resumes bit for bit after a SIGKILL mid-checkpoint."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given, settings, strategies as st

from engine.errors import ProfileError
from engine.jobs.history import RunHistory
from engine.profile import loads_profile
from engine.train.checkpoint import WRITE_DELAY_ENV
from engine.train.suggest import Bounds, PolicyState, suggest
from tests.train_fixtures import events_of, kill, log_tail, make_run, start_trainer, step_losses, train_here, wait_for

MIX = {"science": 0.3, "code": 0.3, "chess": 0.1, "data": 0.2, "chat": 0.1}


def _state(before: dict, now: dict) -> PolicyState:
    state = PolicyState()
    state.add(10, before)
    state.add(20, now)
    return state


def test_worst_domain_still_falling_goes_up_within_the_largest_change():
    before = {"science": 3.0, "code": 2.0, "chess": 2.2, "data": 2.4, "chat": 4.0}
    now = {"science": 2.7, "code": 1.9, "chess": 2.1, "data": 2.3, "chat": 3.4}
    sug = suggest(_state(before, now), MIX, {}, Bounds(max_change=0.05))
    assert sug is not None and sug.step == 20
    assert sug.mix["chat"] == pytest.approx(0.15, abs=1e-4)  # up by the largest change allowed
    assert sum(sug.mix.values()) == pytest.approx(1.0, abs=1e-3)
    assert all(abs(sug.mix[d] - MIX[d]) <= 0.05 + 1e-4 for d in MIX)
    assert sug.reasons["chat"] == "chat: held-out 3.400 bpb, 37% above the mean, still falling 1.9x the others' rate"
    assert list(sug.reasons)[0] == "chat"  # the largest rise first
    assert set(sug.reasons) == {d for d in MIX if abs(sug.mix[d] - MIX[d]) >= 0.005}
    assert all("\n" not in r for r in sug.reasons.values())


def test_flat_domain_near_its_epoch_ceiling_or_switched_off_is_never_raised():
    before = {"science": 3.0, "code": 2.0, "chess": 2.2, "data": 2.4, "chat": 4.0}
    flat = {"science": 2.7, "code": 1.8, "chess": 2.0, "data": 2.2, "chat": 3.99}  # chat worst but flat
    sug = suggest(_state(before, flat), MIX, {}, Bounds())
    assert sug is None or sug.mix["chat"] <= MIX["chat"]
    falling = {**flat, "chat": 3.4}
    sug = suggest(_state(before, falling), MIX, {"chat": 3.7}, Bounds(max_epochs=4.0))  # 3.7 >= 0.9 x 4
    assert sug is None or sug.mix["chat"] <= MIX["chat"]
    off = {**MIX, "chat": 0.0}
    sug = suggest(_state(before, falling), off, {}, Bounds())
    assert sug is None or sug.mix["chat"] == 0.0


def test_no_trend_no_suggestion():
    state = PolicyState()
    state.add(10, {"science": 3.0, "code": 2.0})
    assert suggest(state, MIX, {}, Bounds()) is None
    assert PolicyState.from_dict(state.to_dict()) == state
    assert PolicyState.from_dict({"evals": "junk"}) == PolicyState()


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=6),
    before=st.lists(st.floats(0.5, 8.0), min_size=6, max_size=6),
    ratio=st.lists(st.floats(0.5, 1.2), min_size=6, max_size=6),
    epochs=st.lists(st.floats(0.0, 6.0), min_size=6, max_size=6),
    lo=st.floats(0.0, 0.2), span=st.floats(0.0, 0.8), change=st.floats(0.01, 0.5),
)
def test_suggestions_stay_within_the_bounds(weights, before, ratio, epochs, lo, span, change):
    doms = [f"d{i}" for i in range(len(weights))]
    if sum(weights) <= 0:
        return
    cur = {d: w / sum(weights) for d, w in zip(doms, weights)}
    b = Bounds(min_weight=lo, max_weight=min(lo + span + 0.01, 1.0), max_change=change, max_epochs=4.0)
    state = _state({d: before[i] for i, d in enumerate(doms)}, {d: before[i] * ratio[i] for i, d in enumerate(doms)})
    ep = {d: epochs[i] for i, d in enumerate(doms)}
    sug = suggest(state, cur, ep, b)
    if sug is None:
        return
    assert sum(sug.mix.values()) == pytest.approx(1.0, abs=1e-3)
    for d in doms:
        new, old = sug.mix[d], cur[d]
        assert abs(new - old) <= change + 1e-3
        if old == 0:
            assert new == 0
        if new > old + 1e-3:  # raised: never past the ceiling, never near the epoch limit
            assert new <= max(b.max_weight, old) + 1e-3 and ep[d] < 0.9 * b.max_epochs
        if new < old - 1e-3:
            assert new >= min(b.min_weight, old) - 1e-3


def test_stage_keys_are_checked():
    base = "[profile]\nname = \"p\"\n[mix]\na = 1.0\n[[stages]]\nname = \"s\"\n"
    with pytest.raises(ProfileError, match=r"stages\[0\]\.mix_policy: expected 'fixed', 'suggest' or 'auto'"):
        loads_profile(base + 'mix_policy = "sometimes"\n', "p.toml")
    with pytest.raises(ProfileError, match=r"stages\[0\]\.suggest_every: expected a multiple of eval_every \(50\), got 70"):
        loads_profile(base + 'mix_policy = "suggest"\nsuggest_every = 70\n', "p.toml")
    with pytest.raises(ProfileError, match=r"stages\[0\]\.mix_policy: expected \"fixed\" when eval_every = 0"):
        loads_profile(base + 'mix_policy = "auto"\neval_every = 0\n', "p.toml")
    with pytest.raises(ProfileError, match=r"stages\[0\]\.mix_min: expected at most mix_max \(0.3\), got 0.4"):
        loads_profile(base + "mix_min = 0.4\nmix_max = 0.3\n", "p.toml")
    st_ = loads_profile(base + 'mix_policy = "auto"\nsuggest_every = 100\n', "p.toml").stages[0]
    assert (st_.mix_policy, st_.suggest_every, st_.mix_max_epochs) == ("auto", 100, 0.0)


def test_history_keeps_the_latest_suggestion_and_marks_auto_mixes():
    h = RunHistory("r")
    sug = {"type": "suggestion", "step": 20, "mix": {"a": 0.6, "b": 0.4}, "current": {"a": 0.5, "b": 0.5},
           "reasons": {"a": "a: up"}, "auto": False}
    h.ingest(sug)
    h.ingest({**sug, "step": 10})  # an older one (replayed after a resume) does not replace it
    assert h.suggestion["step"] == 20
    h.ingest({"type": "mix", "step": 21, "mix": {"a": 0.6, "b": 0.4}, "source": "auto"})
    assert h.mixes[-1] == (21, {"a": 0.6, "b": 0.4}, "auto")
    from fcwork.format import mix_history_lines, suggestion_lines

    assert mix_history_lines(h.mixes)[-1] == "from step 21 (auto): a=0.600 b=0.400"
    assert suggestion_lines(h.suggestion, {"a": 0.6, "b": 0.4}) == ("suggested at step 20 (in force): a 0.50\u21920.60", "a: up")
    assert suggestion_lines(h.suggestion, {"a": 0.5, "b": 0.5})[0].startswith("suggested at step 20 (a accepts)")


# -- an auto stage in the real trainer ---------------------------------------------------------------

AUTO = dict(max_steps=30, checkpoint_every=10, eval_every=5, keep_checkpoints=3, eval_probes=False,
            mix_policy="auto", mix_max_change=0.1)


def _auto_mixes(run_dir) -> dict[int, dict]:
    return {e["step"]: e["mix"] for e in events_of(run_dir, "mix") if e.get("source") == "auto"}


def test_suggest_stage_only_proposes(train_workspace):
    run = make_run(train_workspace, "short", **{**AUTO, "max_steps": 20, "mix_policy": "suggest"})
    assert train_here(run) == 0, log_tail(run)
    sugs = events_of(run, "suggestion")
    assert [s["step"] for s in sugs] == [10, 15] and not any(s["auto"] for s in sugs)  # none at the last eval
    assert not events_of(run, "mix")
    assert all(e["mix"] == events_of(run, "step")[0]["mix"] for e in events_of(run, "step"))


@pytest.fixture(scope="module")
def auto_reference(train_workspace):
    run = make_run(train_workspace, "short", **AUTO)
    assert train_here(run) == 0, log_tail(run)
    return run


def test_auto_stage_applies_its_suggestions(auto_reference):
    sugs = events_of(auto_reference, "suggestion")
    mixes = _auto_mixes(auto_reference)
    assert sugs and all(s["auto"] for s in sugs)
    assert sorted(mixes) == [s["step"] + 1 for s in sugs]  # each applied from the step after its eval
    steps = {e["step"]: e for e in events_of(auto_reference, "step")}
    for start, mix in mixes.items():
        in_force = {d: w / sum(mix.values()) for d, w in mix.items()}
        assert steps[start]["mix"] == pytest.approx(in_force) and steps[start - 1]["mix"] != pytest.approx(in_force)
    assert all(reason.startswith(f"{d}: ") and "held-out" in reason for s in sugs for d, reason in s["reasons"].items())


def test_auto_stage_killed_mid_checkpoint_resumes_bit_identical(train_workspace, auto_reference):
    import torch
    from safetensors.torch import load_file

    run = make_run(train_workspace, "short", **AUTO)
    proc = start_trainer(run, **{WRITE_DELAY_ENV: "1.5"})
    part = wait_for(lambda: list((run / "ckpt").glob(".step-20.tmp/model.safetensors")), 120, "step-20 being written")
    kill(proc)
    assert proc.returncode == -signal.SIGKILL and part
    assert not (run / "ckpt" / "step-20").exists()
    before = _auto_mixes(run)
    assert max(before) == 21, "the mix applied at the eval of step 20 was written before the kill"
    assert train_here(run) == 0, log_tail(run)  # resumes from step 10: replays the auto mixes after it
    assert step_losses(run) == step_losses(auto_reference)
    evals = lambda r: {e["step"]: e["domain_loss"] for e in events_of(r, "eval")}  # noqa: E731
    assert evals(run) == evals(auto_reference)
    assert _auto_mixes(run) == _auto_mixes(auto_reference)
    steps_21 = [e for e in events_of(run, "mix") if e["step"] == 21]
    assert len(steps_21) == 1, "a replayed auto mix is not written again"
    mine, theirs = (load_file(str(r / "ckpt" / "step-30" / "model.safetensors")) for r in (run, auto_reference))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
