"""Control requests: parsing and validation, a queue of request files that no writer can overwrite or
renumber, and the trainer answering every request exactly once (applied at a step, superseded by a
later one, or rejected with why), replayed exactly after a SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest

from engine.atomic import atomic_write_text
from engine.errors import ControlError
from engine.jobs.control import ControlRequest, parse_request, request_ids, request_path
from engine.jobs.rundir import RunDir
from tests.train_fixtures import events_of, kill, log_tail, make_run, start_trainer, train_here, wait_for

DOMAINS = ["code", "science", "chess"]


def _run_dir(tmp_path):
    (tmp_path / "stage.toml").write_text("")  # enough for RunDir.exists()
    return RunDir(tmp_path)


def test_parse_valid_request():
    req = parse_request('stop = false\n[mix]\ncode = 1\nscience = 0.5\n', 3, domains=DOMAINS)
    assert req == ControlRequest(request_id=3, mix={"code": 1.0, "science": 0.5}, stop=False)
    assert parse_request("stop = true\n", 4).stop is True


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[mix\n", "invalid TOML"),
        ("stop = 1\n", "stop: expected true or false, got 1"),
        ("speed = 2\n", "speed: unknown key"),
        ("request_id = 2\nstop = true\n", "request_id: unknown key"),
        ("mix = 3\n", "mix: expected a table of domain = weight, got 3"),
        ("[mix]\nmath = 1\n", "mix.math: unknown domain (the run's domains: code, science, chess)"),
        ("[mix]\ncode = -0.5\n", "mix.code: expected a non-negative number, got -0.5"),
        ('[mix]\ncode = "lots"\n', 'mix.code: expected a non-negative number, got "lots"'),
        ("[mix]\ncode = nan\n", "mix.code: expected a non-negative number, got nan"),
        ("[mix]\ncode = 0\nscience = 0\n", "mix: expected at least one positive weight, got all zero"),
        ("[mix]\n", "mix: expected at least one positive weight"),
        ("", "expected a [mix] table or stop = true, got an empty request"),
        ("stop = false\n", "got an empty request"),
    ],
)
def test_parse_rejects_bad_content_with_one_line(text, fragment):
    with pytest.raises(ControlError) as err:
        parse_request(text, 1, "runs/r1/requests/00000001.toml", DOMAINS)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("runs/r1/requests/00000001.toml: ")
    assert fragment in message


def test_requests_get_increasing_ids_and_read_back(tmp_path):
    run = _run_dir(tmp_path)
    assert request_ids(run.requests_dir) == []
    assert run.send_request(mix={"code": 2, "science": 1}) == 1
    assert run.read_request(1, DOMAINS) == ControlRequest(1, {"code": 2.0, "science": 1.0}, False)
    assert run.send_request(stop=True) == 2
    assert run.read_request(2) == ControlRequest(2, None, True)
    assert request_ids(run.requests_dir) == [1, 2]
    assert not [p for p in run.requests_dir.iterdir() if p.name.endswith(".tmp")]


def test_ids_never_come_back_after_files_are_removed_or_a_huge_id_is_written(tmp_path):
    run = _run_dir(tmp_path)
    for _ in range(3):
        run.send_request(stop=True)
    request_path(run.requests_dir, 3).unlink()
    with run.writer() as w:  # the trainer answered request 3 before the file went
        w.write("answer", request_id=3, outcome="applied", step=5)
    assert run.send_request(stop=True) == 4
    for p in run.requests_dir.glob("*.toml"):
        p.unlink()
    # 4 was never answered, so its id may serve again; 3 was, so it never does.
    assert run.send_request(stop=True) == 4
    atomic_write_text(request_path(run.requests_dir, 900), "stop = true\n")
    assert run.send_request(stop=True) == 901


def test_send_refuses_bad_requests_and_writes_nothing(tmp_path):
    run = _run_dir(tmp_path)
    with pytest.raises(ControlError, match="a request needs a mix or stop = true"):
        run.send_request()
    with pytest.raises(ControlError, match="mix.code: expected a non-negative number"):
        run.send_request(mix={"code": -1})
    with pytest.raises(ControlError, match="no such run folder"):
        RunDir(tmp_path / "missing").send_request(stop=True)
    assert request_ids(run.requests_dir) == []


def _send_many(run_path: str, n: int, mix: bool) -> list[int]:
    run = RunDir(run_path)
    return [run.send_request(mix={"code": 1.0, "science": float(i)} if mix else None, stop=not mix) for i in range(n)]


def test_concurrent_writers_in_four_processes_get_distinct_ids(tmp_path):
    run = _run_dir(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_send_many, [(str(run.path), 25, False)] * 4)
    ids = sorted(i for r in results for i in r)
    assert ids == list(range(1, 101))
    assert request_ids(run.requests_dir) == ids
    assert all(run.read_request(i).stop for i in ids)


# -- the trainer answering requests --------------------------------------------------------------

def _set_stage(run_dir, **values) -> None:
    from engine.compat import tomllib

    import tomli_w

    path = run_dir / "stage.toml"
    doc = tomllib.loads(path.read_text())
    doc["stage"].update(values)
    path.write_text(tomli_w.dumps(doc))


def _answers(run_dir) -> list[dict]:
    return events_of(run_dir, "answer")


def _steps(run_dir) -> dict[int, dict]:
    return {e["step"]: e for e in events_of(run_dir, "step")}


def test_mix_change_applies_at_the_announced_step_and_bad_requests_change_nothing(train_workspace):
    # A constant learning rate, so that max_steps can be cut for the replay below without changing training.
    run_dir = make_run(train_workspace, "short", max_steps=100_000, schedule="constant", checkpoint_every=100_000,
                       eval_every=0, warmup_steps=2)
    run = RunDir(run_dir)
    proc = start_trainer(run_dir)
    try:
        wait_for(lambda: max(_steps(run_dir), default=0) >= 3, 90, "step 3")
        bad = [
            ("[mix\n", "invalid TOML"),
            ("[mix]\nmath = 1.0\n", "mix.math: unknown domain (the run's domains: code, science, chess)"),
            ("[mix]\ncode = -1.0\n", "mix.code: expected a non-negative number, got -1.0"),
            ("[mix]\ncode = 0\nchess = 0\n", "mix: expected at least one positive weight, got all zero"),
            ('stop = "yes"\n', 'stop: expected true or false, got "yes"'),
            ("", "got an empty request"),
        ]
        for n, (text, _) in enumerate(bad, start=1):
            atomic_write_text(request_path(run.requests_dir, n), text)
            wait_for(lambda: len(_answers(run_dir)) >= n, 30, f"answer {n}")
        answers = _answers(run_dir)
        assert [a["request_id"] for a in answers] == list(range(1, len(bad) + 1))
        for ans, (_, fragment) in zip(answers, bad):
            assert ans["outcome"] == "rejected"
            assert ans["message"].startswith(f"{run.requests_dir}/") and fragment in ans["message"]
            assert "\n" not in ans["message"]
        assert not events_of(run_dir, "mix")

        rid = run.send_request(mix={"chess": 1.0, "code": 0.0, "science": 0.0})
        assert rid == len(bad) + 1
        ack = wait_for(lambda: events_of(run_dir, "mix"), 30, "the mix event")[0]
        switch = ack["step"]
        assert ack["request_id"] == rid and ack["mix"] == {"code": 0.0, "science": 0.0, "chess": 1.0}
        answer = wait_for(lambda: [a for a in _answers(run_dir) if a["request_id"] == rid], 30, "its answer")[0]
        assert (answer["outcome"], answer["step"]) == ("applied", switch)  # written just after the mix event
        wait_for(lambda: max(_steps(run_dir), default=0) >= switch + 5, 60, "steps after the switch")
    finally:
        kill(proc)  # SIGKILL: nothing checkpointed, the mix lives only in events.jsonl
    steps = _steps(run_dir)
    killed_at = max(steps)
    before = [steps[s] for s in range(1, switch)]
    after = [steps[s] for s in range(switch, killed_at + 1)]
    assert all(e["mix"]["code"] == 0.5 for e in before)
    assert len({d for e in before for d in e["domain_loss"]}) > 1
    assert all(set(e["domain_loss"]) == {"chess"} and e["mix"]["chess"] == 1.0 for e in after)
    losses = {s: e["loss"] for s, e in steps.items()}

    # The same command again (cut short): no checkpoint, so it starts over, replaying the applied mix
    # change at the same step from events.jsonl; the losses match the killed run's exactly.
    _set_stage(run_dir, max_steps=killed_at + 2)
    assert train_here(run_dir) == 0, log_tail(run_dir)
    replayed = _steps(run_dir)
    assert {s: replayed[s]["loss"] for s in losses} == losses
    assert all(set(replayed[s]["domain_loss"]) == {"chess"} for s in range(switch, killed_at + 3))
    assert [e["request_id"] for e in events_of(run_dir, "mix")] == [rid]  # applied once, not re-applied
    assert [a["request_id"] for a in _answers(run_dir)] == list(range(1, rid + 1))  # nothing answered twice
    state = json.loads((run_dir / "ckpt" / f"step-{killed_at + 2}" / "state.json").read_text())
    assert state["last_request_id"] == rid
    assert [e["step"] for e in state["mix_schedule"]] == [0, switch]


def test_stop_request_checkpoints_and_is_not_acted_on_twice(train_workspace):
    run_dir = make_run(train_workspace, "short", max_steps=100_000, schedule="constant", checkpoint_every=1,
                       keep_checkpoints=2, eval_every=0, warmup_steps=2)
    sent: list[int] = []

    def request_stop() -> None:  # as the CLI would, while the trainer trains (in this process here)
        wait_for(lambda: max(_steps(run_dir), default=0) >= 3, 90, "step 3")
        sent.append(RunDir(run_dir).send_request(stop=True))

    thread = threading.Thread(target=request_stop, daemon=True)
    thread.start()
    assert train_here(run_dir) == 0, log_tail(run_dir)
    thread.join(timeout=5)
    statuses = events_of(run_dir, "status")
    assert [s["state"] for s in statuses[-2:]] == ["stopping", "stopped"]
    assert statuses[-1]["message"] == f"stop requested (control request {sent[0]})"
    stopped_at = statuses[-1]["step"]
    assert [(a["request_id"], a["outcome"]) for a in _answers(run_dir)] == [(sent[0], "applied")]
    # Every step is checkpointed here, so the stop came right after one: its state.json records the request.
    state = json.loads((run_dir / "ckpt" / f"step-{stopped_at}" / "state.json").read_text())
    assert state["step"] == stopped_at and state["last_request_id"] == sent[0]
    # Resumed, it trains on: the stop request is not acted on (nor answered) again.
    _set_stage(run_dir, max_steps=stopped_at + 2)
    assert train_here(run_dir) == 0, log_tail(run_dir)
    assert events_of(run_dir, "status")[-1]["state"] == "finished"
    assert max(_steps(run_dir)) == stopped_at + 2
    assert len(_answers(run_dir)) == 1


def _send_mixes(run_path: str, n: int, seed: int) -> list[int]:
    import random
    import time

    rng = random.Random(seed)
    run = RunDir(run_path)
    out = []
    for _ in range(n):
        out.append(run.send_request(mix={"code": rng.random() + 0.1, "science": rng.random(), "chess": rng.random()}))
        time.sleep(rng.random() * 0.02)
    return out


def test_a_hundred_requests_from_four_writers_get_a_hundred_answers_in_order(train_workspace):
    run_dir = make_run(train_workspace, "short", max_steps=100_000, schedule="constant", checkpoint_every=100_000,
                       eval_every=0, warmup_steps=2)
    proc = start_trainer(run_dir)
    try:
        wait_for(lambda: max(_steps(run_dir), default=0) >= 2, 90, "step 2")
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(4) as pool:
            sent = sorted(i for r in pool.starmap(_send_mixes, [(str(run_dir), 25, s) for s in range(4)]) for i in r)
        assert sent == list(range(1, 101))
        answers = wait_for(lambda: (a := _answers(run_dir)) and len(a) >= 100 and a, 90, "100 answers")
    finally:
        kill(proc)
    assert [a["request_id"] for a in answers] == sent  # one each, in order, none lost
    applied = [a for a in answers if a["outcome"] == "applied"]
    assert applied and answers[-1]["outcome"] == "applied"
    for a in answers:
        assert a["outcome"] in ("applied", "superseded")
        if a["outcome"] == "superseded":
            assert a["by"] > a["request_id"]
            winner = next(b for b in answers if b["request_id"] == a["by"])
            assert winner["outcome"] == "applied" and winner["step"] == a["step"]
    assert [e["request_id"] for e in events_of(run_dir, "mix")] == [a["request_id"] for a in applied]
