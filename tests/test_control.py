"""control.toml: parsing and validation, atomic writes with increasing ids, and the trainer acting on it
(mix change at the announced step, stop, rejections as error events)."""

from __future__ import annotations

import json
import threading

import pytest

from engine.jobs.control import CONTROL_FILE, ControlRequest, parse_control, read_control, write_control
from engine.errors import ControlError
from tests.train_fixtures import (  # noqa: F401
    events_of, kill, log_tail, make_run, start_trainer, train_here, train_workspace, wait_for,
)

DOMAINS = ["code", "science", "chess"]


def test_parse_valid_request():
    req = parse_control('request_id = 3\nstop = false\n[mix]\ncode = 1\nscience = 0.5\n', domains=DOMAINS)
    assert req == ControlRequest(request_id=3, mix={"code": 1.0, "science": 0.5}, stop=False)
    assert parse_control("request_id = 4\nstop = true\n").stop is True


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("request_id = 1\n[mix\n", "invalid TOML"),
        ("[mix]\ncode = 1\n", "request_id: missing"),
        ('request_id = "7"\n', 'request_id: expected a non-negative integer, got "7"'),
        ("request_id = -1\n", "request_id: expected a non-negative integer, got -1"),
        ("request_id = true\n", "request_id: expected a non-negative integer, got true"),
        ("request_id = 1\nstop = 1\n", "stop: expected true or false, got 1"),
        ("request_id = 1\nspeed = 2\n", "speed: unknown key"),
        ("request_id = 1\nmix = 3\n", "mix: expected a table of domain = weight, got 3"),
        ("request_id = 1\n[mix]\nmath = 1\n", "mix.math: unknown domain (the run's domains: code, science, chess)"),
        ("request_id = 1\n[mix]\ncode = -0.5\n", "mix.code: expected a non-negative number, got -0.5"),
        ('request_id = 1\n[mix]\ncode = "lots"\n', 'mix.code: expected a non-negative number, got "lots"'),
        ("request_id = 1\n[mix]\ncode = nan\n", "mix.code: expected a non-negative number, got nan"),
        ("request_id = 1\n[mix]\ncode = 0\nscience = 0\n", "mix: expected at least one positive weight, got all zero"),
        ("request_id = 1\n[mix]\n", "mix: expected at least one positive weight"),
    ],
)
def test_parse_rejects_bad_content_with_one_line(text, fragment):
    with pytest.raises(ControlError) as err:
        parse_control(text, "runs/r1/control.toml", DOMAINS)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("runs/r1/control.toml: ")
    assert fragment in message


def test_write_control_increments_ids_and_reads_back(tmp_path):
    assert read_control(tmp_path) is None
    assert write_control(tmp_path, mix={"code": 2, "science": 1}) == 1
    assert read_control(tmp_path, DOMAINS) == ControlRequest(1, {"code": 2.0, "science": 1.0}, False)
    assert write_control(tmp_path, stop=True) == 2
    assert read_control(tmp_path) == ControlRequest(2, None, True)
    # No temp files left behind; the lock file is the only extra.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".control.lock", CONTROL_FILE]


def test_write_control_after_a_damaged_file_keeps_ids_increasing(tmp_path):
    (tmp_path / CONTROL_FILE).write_text("request_id = 41\n[mix\n")
    assert write_control(tmp_path, stop=True) == 42
    (tmp_path / CONTROL_FILE).write_text("garbage")
    assert write_control(tmp_path, stop=True) == 1


def test_write_control_refuses_bad_requests(tmp_path):
    with pytest.raises(ControlError, match="needs a mix or stop"):
        write_control(tmp_path)
    with pytest.raises(ControlError, match="mix.code: expected a non-negative number, got -1"):
        write_control(tmp_path, mix={"code": -1})
    with pytest.raises(ControlError, match="no such run folder"):
        write_control(tmp_path / "missing", stop=True)
    assert not (tmp_path / CONTROL_FILE).exists()


def test_concurrent_writers_get_distinct_ids(tmp_path):
    ids: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(10):
            rid = write_control(tmp_path, mix={"code": 1})
            with lock:
                ids.append(rid)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 41))
    assert read_control(tmp_path).request_id == 40


# -- the trainer acting on control.toml ---------------------------------------------------------

def _set_stage(run_dir, **values) -> None:
    from engine.compat import tomllib

    import tomli_w

    path = run_dir / "stage.toml"
    doc = tomllib.loads(path.read_text())
    doc["stage"].update(values)
    path.write_text(tomli_w.dumps(doc))


def _errors(run_dir) -> list[dict]:
    return [e for e in events_of(run_dir, "error") if e["source"] == "control"]


def _steps(run_dir) -> dict[int, dict]:
    return {e["step"]: e for e in events_of(run_dir, "step")}


def test_mix_change_applies_at_the_announced_step_and_bad_requests_change_nothing(train_workspace):
    from engine.atomic import atomic_write_text

    # A constant learning rate, so that max_steps can be cut for the replay below without changing training.
    run = make_run(train_workspace, "short", max_steps=100_000, schedule="constant", checkpoint_every=100_000,
                   eval_every=0, warmup_steps=2)
    proc = start_trainer(run)
    try:
        wait_for(lambda: max(_steps(run), default=0) >= 3, 90, "step 3")
        bad = [
            ("request_id = 1\n[mix\n", "invalid TOML"),
            ("request_id = 2\n[mix]\nmath = 1.0\n", "mix.math: unknown domain (the run's domains: code, science, chess)"),
            ("request_id = 3\n[mix]\ncode = -1.0\n", "mix.code: expected a non-negative number, got -1.0"),
            ("request_id = 4\n[mix]\ncode = 0\nchess = 0\n", "mix: expected at least one positive weight, got all zero"),
            ('request_id = 5\nstop = "yes"\n', 'stop: expected true or false, got "yes"'),
        ]
        for n, (text, _) in enumerate(bad, start=1):
            atomic_write_text(run / CONTROL_FILE, text)
            wait_for(lambda: len(_errors(run)) >= n, 30, f"rejection {n}")
        errors = _errors(run)
        assert len(errors) == len(bad)
        for err, (_, fragment) in zip(errors, bad):
            assert err["message"].startswith(f"{run / CONTROL_FILE}: ") and fragment in err["message"]
            assert "\n" not in err["message"]
        assert [e.get("request_id") for e in errors] == [None, 2, 3, 4, 5]
        assert not events_of(run, "mix")

        rid = write_control(run, mix={"chess": 1.0, "code": 0.0, "science": 0.0})
        assert rid == 6
        ack = wait_for(lambda: events_of(run, "mix"), 30, "the mix acknowledgement")[0]
        switch = ack["step"]
        assert ack["request_id"] == 6 and ack["mix"] == {"code": 0.0, "science": 0.0, "chess": 1.0}
        wait_for(lambda: max(_steps(run), default=0) >= switch + 5, 60, "steps after the switch")
    finally:
        kill(proc)  # SIGKILL: nothing checkpointed, the mix lives only in events.jsonl
    steps = _steps(run)
    killed_at = max(steps)
    before = [steps[s] for s in range(1, switch)]
    after = [steps[s] for s in range(switch, killed_at + 1)]
    assert all(e["mix"]["code"] == 0.5 for e in before)
    assert len({d for e in before for d in e["domain_loss"]}) > 1
    assert all(set(e["domain_loss"]) == {"chess"} and e["mix"]["chess"] == 1.0 for e in after)
    losses = {s: e["loss"] for s, e in steps.items()}

    # The same command again (cut short): no checkpoint, so it starts over, replaying the acknowledged
    # mix change at the same step from events.jsonl; the losses match the killed run's exactly.
    _set_stage(run, max_steps=killed_at + 2)
    assert train_here(run) == 0, log_tail(run)
    replayed = _steps(run)
    assert {s: replayed[s]["loss"] for s in losses} == losses
    assert all(set(replayed[s]["domain_loss"]) == {"chess"} for s in range(switch, killed_at + 3))
    assert [e["request_id"] for e in events_of(run, "mix")] == [6]  # acknowledged once, not re-applied
    assert len(_errors(run)) == len(bad)  # old rejected requests are not reported again
    state = json.loads((run / "ckpt" / f"step-{killed_at + 2}" / "state.json").read_text())
    assert state["last_request_id"] == 6
    assert [e["step"] for e in state["mix_schedule"]] == [0, switch]


def test_stop_request_checkpoints_and_is_not_acted_on_twice(train_workspace):
    run = make_run(train_workspace, "short", max_steps=100_000, schedule="constant", checkpoint_every=1,
                   keep_checkpoints=2, eval_every=0, warmup_steps=2)
    sent: list[int] = []

    def request_stop() -> None:  # as the CLI would, while the trainer trains (in this process here)
        wait_for(lambda: max(_steps(run), default=0) >= 3, 90, "step 3")
        sent.append(write_control(run, stop=True))

    thread = threading.Thread(target=request_stop, daemon=True)
    thread.start()
    assert train_here(run) == 0, log_tail(run)
    thread.join(timeout=5)
    statuses = events_of(run, "status")
    assert [s["state"] for s in statuses[-2:]] == ["stopping", "stopped"]
    assert statuses[-1]["message"] == f"stop requested (control request {sent[0]})"
    stopped_at = statuses[-1]["step"]
    # Every step is checkpointed here, so the stop came right after one: its state.json records the request.
    state = json.loads((run / "ckpt" / f"step-{stopped_at}" / "state.json").read_text())
    assert state["step"] == stopped_at and state["last_request_id"] == sent[0]
    # Resumed, it trains on: the stop request is not acted on again.
    _set_stage(run, max_steps=stopped_at + 2)
    assert train_here(run) == 0, log_tail(run)
    assert events_of(run, "status")[-1]["state"] == "finished"
    assert max(_steps(run)) == stopped_at + 2
