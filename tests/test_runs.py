"""Run folders (create, list, summarise, find checkpoints, resolve init_from) and events.jsonl I/O."""

from __future__ import annotations

import os
import re
from engine.compat import tomllib

import pytest

from engine.errors import DataError, RunError, TokenizerError
from engine.jobs.events import EventWriter, read_events, tail_events
from engine.jobs.rundir import RunDir
from engine.jobs.runs import create_run, run_domains
from tests.train_fixtures import TRAIN_DOMAINS, finish_run_by_hand


# -- events.jsonl ---------------------------------------------------------------------------

def test_event_writer_appends_flushed_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write("status", state="starting", step=0)
        ev = w.write("step", step=1, loss=2.5, domain_loss={"code": 2.5})
        # Flushed: a reader sees it while the writer is still open.
        events, offset = read_events(path)
    assert [e["type"] for e in events] == ["status", "step"]
    assert events[1] == ev and isinstance(ev["time"], float)
    assert offset == path.stat().st_size
    with pytest.raises(ValueError):
        w.write("step", step=2)


def test_read_events_is_incremental_and_waits_for_a_partial_line(tmp_path):
    path = tmp_path / "events.jsonl"
    assert read_events(path) == ([], 0)
    with EventWriter(path) as w:
        w.write("status", state="running", step=0)
    events, offset = read_events(path)
    assert len(events) == 1
    with open(path, "a") as fh:
        fh.write('{"type": "step", "step": 1, "lo')  # a write in progress
    assert read_events(path, offset) == ([], offset)
    with open(path, "a") as fh:
        fh.write('ss": 3.0}\n')
    events, offset2 = read_events(path, offset)
    assert events == [{"type": "step", "step": 1, "loss": 3.0}]
    assert offset2 == path.stat().st_size
    # A file replaced by a shorter one is read from the start again.
    path.write_text('{"type": "status", "state": "starting"}\n')
    assert read_events(path, offset2)[0] == [{"type": "status", "state": "starting"}]


def test_a_torn_line_from_a_killed_writer_is_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "step", "step": 1}\n{"type": "step", "st')
    with EventWriter(path) as w:  # the next trainer starts a fresh line
        w.write("status", state="starting", step=1)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    events, _ = read_events(path)
    assert [(e["type"], e["step"]) for e in events] == [("step", 1), ("status", 1)]


def test_tail_events_finds_the_last_of_each_type_across_blocks(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.write("status", state="running", step=0)
        for i in range(1, 400):
            w.write("step", step=i, loss=1.0 / i, padding="x" * 50)
    with open(path, "a") as fh:
        fh.write('{"type": "step", "step": 4')  # torn tail
    last = tail_events(path, {"status", "step", "eval"}, block=256)
    assert last["status"]["state"] == "running"
    assert last["step"]["step"] == 399
    assert "eval" not in last
    assert list(last) == ["status", "step"]  # in the order written
    assert tail_events(tmp_path / "none.jsonl", {"status"}) == {}


def test_summary_reads_a_status_and_a_step_of_the_same_millisecond_in_file_order(tmp_path):
    (tmp_path / "stage.toml").write_text('[run]\nid = "r"\n[stage]\nmax_steps = 10\n')
    with open(tmp_path / "events.jsonl", "w") as fh:
        fh.write('{"type": "status", "time": 5.0, "state": "running", "step": 0}\n'
                 '{"type": "step", "time": 5.0, "step": 4, "loss": 3.0}\n')
    s = RunDir(tmp_path).summary()
    assert (s.status, s.step) == ("running", 4)


def test_event_fields_must_be_json(tmp_path):
    with EventWriter(tmp_path / "e.jsonl") as w:
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            w.write("step", bad=object())
        with pytest.raises(ValueError):
            w.write("step", loss=float("nan"))


# -- creating runs ----------------------------------------------------------------------------

def test_create_run_freezes_the_stage(train_workspace):
    ws, prof = train_workspace.ws, train_workspace.profile
    run_dir = create_run(ws, prof, "short")
    assert run_dir.parent == ws.runs_dir
    assert run_dir.name.endswith("-short") and run_dir.name[:8].isdigit() and run_dir.name[8] == "-"
    doc = tomllib.loads((run_dir / "stage.toml").read_text())
    assert doc["run"]["id"] == run_dir.name and doc["run"]["profile"] == prof.name
    assert doc["run"]["stage"] == "short" and doc["run"]["workspace"] == str(ws.root)
    assert doc["paths"]["tokenizer_hash"] == train_workspace.tokenizer_hash
    assert doc["paths"]["shards"] == str(ws.tok_dir(prof.name)) and doc["paths"]["init_from"] == ""
    assert doc["stage"]["model"]["vocab_size"] == train_workspace.vocab_size
    assert doc["stage"]["max_steps"] == prof.stage("short").max_steps
    assert list(doc["mix"]) == TRAIN_DOMAINS and abs(sum(doc["mix"].values()) - 1) < 1e-12
    spec = RunDir(run_dir).spec()
    assert spec.model.vocab_size == train_workspace.vocab_size and spec.domains == TRAIN_DOMAINS
    # A second run of the same stage in the same second gets a suffix.
    second = create_run(ws, prof, "short")
    assert second != run_dir and second.name.startswith(run_dir.name[:15])
    assert [r.path for r in RunDir.all(ws)[-2:]] == sorted([run_dir, second], key=lambda p: p.name)


def test_run_domains_keep_zero_weight_domains_with_data(train_workspace):
    prof = train_workspace.profile
    st = prof.stage("code-only")
    assert run_domains(prof, st) == {"code": 1.0, "science": 0.0, "chess": 0.0}


def test_create_run_refuses_missing_tokenizer_or_shards(train_workspace, tmp_path):
    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "empty")
    ws.init()
    prof = train_workspace.profile
    with pytest.raises(TokenizerError, match=r"no tokenizer yet \(run `fcwork tokenizer train"):
        create_run(ws, prof, "short")
    tok = ws.tokenizer_path(prof.tokenizer_name)
    tok.write_bytes(train_workspace.tokenizer_path.read_bytes())
    with pytest.raises(DataError, match=r"code.bin: no shard for domain 'code' \(run `fcwork data pretokenize"):
        create_run(ws, prof, "short")
    assert RunDir.all(ws) == []


def test_create_run_refuses_shards_of_another_tokenizer(train_workspace, tmp_path):
    import shutil

    from engine.workspace import Workspace

    ws = Workspace(tmp_path / "other")
    ws.init()
    prof = train_workspace.profile
    shutil.copytree(train_workspace.ws.tok_dir(prof.name), ws.tok_dir(prof.name))
    ws.tokenizer_path(prof.tokenizer_name).write_bytes(b"a different tokenizer")
    with pytest.raises(DataError, match="tokenizer"):
        create_run(ws, prof, "short")


def test_init_from_resolves_to_the_latest_finished_run(train_workspace):
    ws, prof = train_workspace.ws, train_workspace.profile
    with pytest.raises(RunError, match=r"init_from = 'short': no finished run of stage 'short'"):
        create_run(ws, prof, "follow")
    first = create_run(ws, prof, "short")
    finish_run_by_hand(first, steps=(4, 8))
    unfinished = create_run(ws, prof, "short")
    finish_run_by_hand(unfinished, steps=(4,), state="stopped")
    run = create_run(ws, prof, "follow")
    doc = tomllib.loads((run / "stage.toml").read_text())
    assert doc["paths"]["init_from"] == str(first / "ckpt" / "step-8")
    assert RunDir(run).spec().init_from == first / "ckpt" / "step-8"


# -- reading runs -----------------------------------------------------------------------------

def test_read_run_summarises_state_step_and_loss(train_workspace):
    ws, prof = train_workspace.ws, train_workspace.profile
    run = create_run(ws, prof, "short")
    s = RunDir(run).summary()
    assert (s.status, s.step, s.loss, s.stage, s.profile) == ("created", 0, None, "short", prof.name)
    assert s.max_steps == prof.stage("short").max_steps
    with EventWriter(run / "events.jsonl") as w:
        w.write("status", state="running", step=0, max_steps=s.max_steps, pid=1, device="cpu")
        w.write("step", step=1, loss=5.5)
        w.write("step", step=2, loss=5.25)
        w.write("status", state="failed", step=2, max_steps=s.max_steps, pid=1, device="cpu", message="boom")
    s = RunDir(run).summary()
    assert (s.status, s.step, s.loss, s.message) == ("failed", 2, 5.25, "boom")


def test_latest_checkpoint_ignores_temp_and_incomplete_folders(tmp_path):
    assert RunDir(tmp_path).latest_checkpoint() is None
    for name in ("step-5", "step-10", ".step-15.tmp", "step-20", "step-x"):
        (tmp_path / "ckpt" / name).mkdir(parents=True)
    for name in ("step-5", "step-10", ".step-15.tmp"):
        (tmp_path / "ckpt" / name / "state.json").write_text("{}")
    assert RunDir(tmp_path).latest_checkpoint() == tmp_path / "ckpt" / "step-10"  # step-20 has no state.json


def test_load_run_spec_errors_name_the_key(train_workspace):
    ws, prof = train_workspace.ws, train_workspace.profile
    run = create_run(ws, prof, "short")
    path = run / "stage.toml"
    text = path.read_text()
    path.write_text(text.replace("lr = ", 'lr = "fast"\nold_lr = ', 1))
    with pytest.raises(RunError) as err:
        RunDir(run).spec()
    assert str(err.value).startswith(f"{path}: stage.")
    path.write_text(text.replace('seq_len = ', 'seq_len = "2k"\nx = ', 1))
    with pytest.raises(RunError, match=r'stage\.(seq_len: expected a positive integer, got "2k"|x: unknown key)'):
        RunDir(run).spec()
    path.write_text("[run\n")
    with pytest.raises(RunError, match="invalid TOML"):
        RunDir(run).spec()
    os.remove(path)
    with pytest.raises(RunError, match="no such file"):
        RunDir(run).spec()


# -- a queue entry's own start point (`fcwork queue add ... --from`) ---------------------------

def _edit_stage(run_dir, edit) -> None:
    import tomli_w

    path = run_dir / "stage.toml"
    doc = tomllib.loads(path.read_text())
    edit(doc)
    path.write_text(tomli_w.dumps(doc))


def test_a_queue_entry_starts_from_the_stage_or_run_it_names(train_workspace):
    from engine.jobs.queue import StageQueue

    ws, prof, tok = train_workspace.ws, train_workspace.profile, train_workspace.tokenizer_hash
    code = create_run(ws, prof, "code-only")
    finish_run_by_hand(code, steps=(3, 6), tokenizer_hash=tok)
    older = create_run(ws, prof, "short")
    finish_run_by_hand(older, steps=(4,), tokenizer_hash=tok)
    q = StageQueue(ws)
    by_stage = q.add("trainfx", "follow", "code-only")
    ids = [r.id for r in RunDir.all(ws)]
    prefix = next(older.name[:n] for n in range(9, len(older.name) + 1)
                  if [i for i in ids if i.startswith(older.name[:n])] == [older.name])
    by_run = q.add("trainfx", "follow", prefix)
    assert (by_stage.init_from, by_run.init_from) == ("code-only", older.name)  # a prefix is kept whole
    run = create_run(ws, prof, "follow", by_stage.init_from)
    assert tomllib.loads((run / "stage.toml").read_text())["paths"]["init_from"] == str(code / "ckpt" / "step-6")
    assert RunDir(create_run(ws, prof, "follow", by_run.init_from)).spec().init_from == older / "ckpt" / "step-4"
    # The queue waits for a queued entry of the chosen stage, not the stage's own init_from; a run never waits.
    short, code_entry = q.add("trainfx", "short"), q.add("trainfx", "code-only")
    entries = q.read()
    assert q.waiting_for(by_stage, entries).id == code_entry.id
    assert q.waiting_for(by_run, entries) is None
    assert q.waiting_for(q.add("trainfx", "follow"), q.read()).id == short.id


def test_queue_add_from_refuses_what_it_cannot_start_from(train_workspace):
    from engine.jobs.queue import StageQueue
    from tests.queue_fixtures import fcwork

    ws, prof, tok = train_workspace.ws, train_workspace.profile, train_workspace.tokenizer_hash
    runs = {}
    for name, edit in (("profile", lambda d: d["run"].update(profile="other")),
                       ("tokenizer", lambda d: d["paths"].update(tokenizer_hash="f" * 64)),
                       ("shape", lambda d: d["stage"]["model"].update(dim=64)), ("stopped", None)):
        runs[name] = create_run(ws, prof, "short")
        finish_run_by_hand(runs[name], steps=(4,), state="stopped" if edit is None else "finished", tokenizer_hash=tok)
        if edit is not None:
            _edit_stage(runs[name], edit)
    q = StageQueue(ws)
    queued = len(q.read())
    for start, error in ((runs["profile"].name, "is of profile 'other', expected one of 'trainfx'"),
                         (runs["tokenizer"].name, "was trained with tokenizer ff"),
                         (runs["shape"].name, "has another model shape: dim 64 (expected 32)"),
                         (runs["stopped"].name, "is stopped; expected a finished run"),
                         ("follow", "expected another stage (short, code-only) or a run, not the stage itself")):
        with pytest.raises(RunError, match=rf"stage 'follow': from '{start}': .*{re.escape(error)}"):
            q.add("trainfx", "follow", start)
    r = fcwork(ws.root, "queue", "add", "trainfx", "follow", "--from", "nope")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "from 'nope': expected a stage of trainfx (short, code-only) or a run:" in r.stderr and "no run 'nope'" in r.stderr
    r = fcwork(ws.root, "queue", "add", "trainfx", "short", "--from", "code-only")
    assert r.returncode == 2 and "stage 'short': from 'code-only': the stage starts from scratch (no init_from)" in r.stderr
    assert len(q.read()) == queued  # nothing was added
