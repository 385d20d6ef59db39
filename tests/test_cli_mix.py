"""`fcwork mix RUN DOMAIN=WEIGHT...`: the named domains change, the others keep the weight they
train with now (`--only`: drop to 0), then the mix is normalised; `--help` says so. `fcwork runs show` lists the mix history and the exports."""

from __future__ import annotations

import json
import os
import threading
import time
import tomllib

import pytest
import tomli_w

from engine.jobs.control import request_ids, request_path
from engine.jobs.locks import open_lock, try_flock, write_pid
from engine.jobs.rundir import RunDir
from engine.mix import merge
from fcwork.cli import main

START = {"science": 0.3, "code": 0.3, "chess": 0.1, "data": 0.2, "chat": 0.1}
LIVE = {"science": 0.2, "code": 0.4, "chess": 0.1, "data": 0.2, "chat": 0.1}  # in force after a change


@pytest.fixture
def live_run(workspace):
    """A run folder whose events say the mix changed to LIVE, with its trainer lock held (a trainer runs)."""
    run = RunDir(workspace.runs_dir / "20250102-120000-base")
    run.path.mkdir(parents=True)
    run.stage_file.write_text(tomli_w.dumps({"run": {"id": run.id, "profile": "default", "stage": "base"},
                                             "stage": {"name": "base", "max_steps": 300}, "mix": START}))
    events = [{"type": "status", "time": 1.0, "state": "running", "step": 0, "max_steps": 300},
              {"type": "step", "time": 2.0, "step": 59, "loss": 3.0, "mix": START},
              {"type": "mix", "time": 3.0, "step": 60, "mix": LIVE, "request_id": 1},
              {"type": "answer", "time": 3.0, "step": 60, "request_id": 1, "outcome": "applied"},
              {"type": "step", "time": 4.0, "step": 60, "loss": 3.0, "mix": LIVE}]
    run.events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    fd = open_lock(run.trainer_lock)
    assert try_flock(fd)
    write_pid(fd, os.getpid())
    yield run
    os.close(fd)


def answer_requests(run: RunDir, stop: threading.Event) -> None:
    """Play the trainer: answer each new request as applied at step 61."""
    answered = 1
    while not stop.is_set():
        for rid in request_ids(run.requests_dir):
            if rid > answered:
                with open(run.events_file, "a") as fh:
                    fh.write(json.dumps({"type": "answer", "time": 5.0, "step": 61, "request_id": rid,
                                         "outcome": "applied"}) + "\n")
                answered = rid
        time.sleep(0.02)


def mix(run: RunDir, *args: str) -> dict[str, float]:
    """Run `fcwork mix RUN ARGS` against the fake trainer; the mix its request carried."""
    stop = threading.Event()
    thread = threading.Thread(target=answer_requests, args=(run, stop), daemon=True)
    thread.start()
    try:
        assert main(["--workspace", str(run.path.parent.parent), "mix", run.id, *args, "--timeout", "10"]) == 0
    finally:
        stop.set()
        thread.join()
    last = request_ids(run.requests_dir)[-1]
    return tomllib.loads(request_path(run.requests_dir, last).read_text())["mix"]


def test_naming_one_domain_keeps_the_others_weights(live_run, capsys):
    sent = mix(live_run, "chess=0.9")
    total = 0.2 + 0.4 + 0.9 + 0.2 + 0.1  # the live mix (not stage.toml's), chess changed
    assert sent == pytest.approx({d: (0.9 if d == "chess" else w) / total for d, w in LIVE.items()})
    assert sum(sent.values()) == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert "applied from step 61" in out and "science=0.111" in out


def test_only_means_these_and_nothing_else(live_run):
    sent = mix(live_run, "--only", "chess=0.9", "code=0.1")
    assert sent == pytest.approx({"science": 0.0, "code": 0.1, "chess": 0.9, "data": 0.0, "chat": 0.0})


def test_a_zero_switches_one_domain_off_and_keeps_the_rest(live_run):
    sent = mix(live_run, "chat=0")
    assert sent == pytest.approx({d: (0.0 if d == "chat" else w / 0.9) for d, w in LIVE.items()})


def test_refusals_are_one_line(live_run, capsys):
    root = str(live_run.path.parent.parent)
    assert main(["--workspace", root, "mix", live_run.id, "--only", "chess=0"]) == 2
    assert "expected at least one positive weight" in capsys.readouterr().err
    assert main(["--workspace", root, "mix", live_run.id, "golf=1"]) == 2
    assert "mix.golf: expected a domain of the run" in capsys.readouterr().err
    assert request_ids(live_run.requests_dir) == []


def test_help_says_what_naming_some_domains_means(capsys):
    with pytest.raises(SystemExit):
        main(["mix", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "every other domain keeps the weight it trains with now" in out
    assert "--only" in out and "every domain not named gets weight 0" in out


def test_merge_is_normalised_and_keeps_order():
    assert merge({"a": 2.0, "b": 2.0}, {"b": 1.0}) == pytest.approx({"a": 0.5 / 1.5, "b": 1.0 / 1.5})
    assert list(merge({"a": 1.0, "b": 1.0}, {"c": 1.0})) == ["a", "b", "c"]
    assert merge({"a": 1.0, "b": 1.0}, {"b": 1.0}, only=True) == {"a": 0.0, "b": 1.0}


def test_runs_show_lists_the_mix_history_and_the_exports(live_run, capsys):
    out_dir = live_run.exports_dir / "hf-f32-step300"
    out_dir.mkdir(parents=True)
    (out_dir / "model.safetensors").write_bytes(b"x" * 2500)
    (live_run.exports_dir / ".gguf-f16-step300.abc.tmp").mkdir()  # an export under way is not listed
    assert main(["--workspace", str(live_run.path.parent.parent), "runs", "show", live_run.id]) == 0
    out = capsys.readouterr().out
    assert "mix history:" in out
    assert "from step 59: science=0.300 code=0.300 chess=0.100 data=0.200 chat=0.100" in out
    assert "from step 60 (request 1): science=0.200 code=0.400" in out
    assert "hf-f32-step300  2.5 kB" in out and ".tmp" not in out


SUGGESTION = {"type": "suggestion", "time": 4.5, "step": 60, "auto": False,
              "mix": {"science": 0.15, "code": 0.4, "chess": 0.2, "data": 0.15, "chat": 0.1}, "current": LIVE,
              "reasons": {"chess": "chess: held-out 4.100 bpb, 20% above the mean, still falling"}}


def test_accept_suggestion_sends_the_suggested_mix(live_run, capsys):
    with open(live_run.events_file, "a") as fh:
        fh.write(json.dumps(SUGGESTION) + "\n")
    assert main(["--workspace", str(live_run.path.parent.parent), "runs", "show", live_run.id]) == 0
    shown = capsys.readouterr().out
    assert f"suggested at step 60 (fcwork mix {live_run.id} --accept-suggestion): chess 0.10\u21920.20\n" in shown
    assert "  chess: held-out 4.100 bpb" in shown
    assert mix(live_run, "--accept-suggestion") == SUGGESTION["mix"]
    out = capsys.readouterr().out
    assert "suggested at step 60: chess 0.10\u21920.20\n  chess: held-out" in out and "applied from step 61" in out


def test_accept_suggestion_refusals_are_one_line(live_run, capsys):
    root = str(live_run.path.parent.parent)
    assert main(["--workspace", root, "mix", live_run.id, "--accept-suggestion"]) == 2
    assert "no mix suggestion yet" in capsys.readouterr().err
    with open(live_run.events_file, "a") as fh:
        fh.write(json.dumps({**SUGGESTION, "auto": True}) + "\n")
    assert main(["--workspace", root, "mix", live_run.id, "--accept-suggestion"]) == 2
    assert "applies its suggestions itself" in capsys.readouterr().err
    assert main(["--workspace", root, "mix", live_run.id, "code=1", "--accept-suggestion"]) == 2
    assert "expected either DOMAIN=WEIGHT pairs or --accept-suggestion" in capsys.readouterr().err
    assert main(["--workspace", root, "mix", live_run.id]) == 2
    assert request_ids(live_run.requests_dir) == []
