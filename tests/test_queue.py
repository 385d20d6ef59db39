"""The stage queue: operations, state rules, concurrent writers, and one-line errors for a bad queue.toml."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from engine.errors import ProfileError, QueueError
from engine.jobs.queue import StageQueue, parse_queue
from tests.conftest import REPO
from tests.queue_fixtures import fcwork


def test_add_list_move_remove(workspace):
    q = StageQueue(workspace)
    a = q.add("default", "base")
    b, c = q.add_many("default", ["anneal", "base"])
    assert [e.id for e in q.read()] == [1, 2, 3]
    assert (a.state, a.run_id, a.restarts) == ("queued", "", 0)
    assert q.move(3, "up") == 1
    assert [e.id for e in q.read()] == [1, 3, 2]
    assert q.move(1, 2) == 2
    assert [e.id for e in q.read()] == [3, 2, 1]
    assert q.move(3, "up") == 0  # already first: stays
    q.remove(2)
    assert [e.id for e in q.read()] == [3, 1]
    assert q.add("default", "anneal").id == 4  # ids keep growing past the highest in use
    # The file round-trips through TOML exactly.
    again = StageQueue(workspace).read()
    assert [(e.id, e.stage, e.state) for e in again] == [(3, "base", "queued"), (1, "base", "queued"), (4, "anneal", "queued")]


def test_add_validates_profile_and_stage(workspace):
    q = StageQueue(workspace)
    with pytest.raises(ProfileError, match=r"no stage named 'nope' \(known: base, anneal, align, joint, sft\)"):
        q.add("default", "nope")
    with pytest.raises(ProfileError, match=r"missing\.toml: no such profile"):
        q.add("missing", "base")
    assert q.read() == []


def test_state_rules(workspace):
    q = StageQueue(workspace)
    q.add_many("default", ["base", "anneal"])
    assert q.cancel(1).state == "cancelled"
    with pytest.raises(QueueError, match="entry 1 is cancelled; only a queued or running entry can be cancelled"):
        q.cancel(1)
    entry = q.resume(1)
    assert (entry.state, entry.message) == ("queued", "queued again")
    with pytest.raises(QueueError, match="entry 1 is queued; only a cancelled or failed entry can be resumed"):
        q.resume(1)
    q.update(2, state="running")
    with pytest.raises(QueueError, match="entry 2 is running; cancel it first"):
        q.remove(2)
    q.update(2, state="done")
    with pytest.raises(QueueError, match="entry 2 is done"):
        q.resume(2)
    with pytest.raises(QueueError, match=r"no entry with id 9 \(ids: 1, 2\)"):
        q.move(9, "up")
    with pytest.raises(QueueError, match="expected a position from 1 to 2, got 5"):
        q.move(1, 4)


def test_cancel_orphaned_running_entry(workspace):
    """A running entry with neither supervisor nor trainer alive is cancelled at once."""
    q = StageQueue(workspace)
    q.add("default", "base")
    q.update(1, state="running", pid=999999)
    entry = q.cancel(1)
    assert entry.state == "cancelled" and "gone" in entry.message


def test_claim_next_prefers_orphaned_running(workspace):
    q = StageQueue(workspace)
    q.add_many("default", ["base", "anneal"])
    entry, orphaned = q.claim_next()
    assert (entry.id, orphaned) == (1, False)
    assert q.get(1).state == "running"
    entry, orphaned = q.claim_next()  # 1 is still running: a new supervisor must look at it first
    assert (entry.id, orphaned) == (1, True)


ADDER = textwrap.dedent("""
    import sys
    from engine.jobs.queue import StageQueue
    from engine.workspace import Workspace
    q = StageQueue(Workspace(__import__("pathlib").Path(sys.argv[1])))
    for i in range(int(sys.argv[2])):
        q.add("default", "base" if i % 2 else "anneal")
        if i % 5 == 0:
            q.move(q.read()[-1].id, "up")
""")


def test_concurrent_edits_lose_nothing(workspace):
    """Two processes adding and reordering at once: every add survives, ids stay unique."""
    n = 25
    procs = [subprocess.Popen([sys.executable, "-c", ADDER, str(workspace.root), str(n)], cwd=REPO,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    entries = StageQueue(workspace).read()
    ids = [e.id for e in entries]
    assert len(ids) == 2 * n
    assert sorted(ids) == list(range(1, 2 * n + 1))


@pytest.mark.parametrize("text, error", [
    ("[[entries]\n", r"queue\.toml: invalid TOML"),
    ("[[entries]]\nid = 1\nprofile = 'default'\nstage = 'base'\nstate = 'paused'\n",
     r"queue\.toml: entries\[0\]\.state: expected one of queued, running, done, failed, cancelled, got 'paused'"),
    ("[[entries]]\nid = 1\nprofile = 'default'\nstate = 'queued'\n",
     r"queue\.toml: entries\[0\]\.stage: missing \(expected a stage name\)"),
    ("[[entries]]\nid = 1\nprofile = 'default'\nstage = 'base'\nstate = 'queued'\nrestart = 2\n",
     r"queue\.toml: entries\[0\]\.restart: unknown key \(expected one of id, profile"),
    ("[[entries]]\nid = '1'\nprofile = 'default'\nstage = 'base'\nstate = 'queued'\n",
     r"queue\.toml: entries\[0\]\.id: expected a positive integer, got '1'"),
    ("[[entries]]\nid = 1\nprofile = 'default'\nstage = 'base'\nstate = 'queued'\n"
     "[[entries]]\nid = 1\nprofile = 'default'\nstage = 'anneal'\nstate = 'queued'\n",
     r"queue\.toml: entries\[1\]\.id: expected a unique id, got duplicate 1"),
    ("entries = 3\n", r"queue\.toml: entries: expected an array of tables"),
    ("paused = true\n", r"queue\.toml: paused: unknown key"),
    ("[[entries]]\nid = 1\nprofile = 'default'\nstage = 'base'\nstate = 'queued'\nrestarts = -1\n",
     r"entries\[0\]\.restarts: expected a non-negative integer, got -1"),
])
def test_bad_queue_file(workspace, text, error):
    workspace.queue_path.write_text(text)
    with pytest.raises(QueueError, match=error) as info:
        StageQueue(workspace).read()
    assert "\n" not in str(info.value)
    assert str(workspace.queue_path) in str(info.value)


def test_bad_queue_file_refuses_edits(workspace):
    """An edit never overwrites a file it could not read."""
    workspace.queue_path.write_text("[[entries]]\nid = 0\nprofile = 'p'\nstage = 's'\nstate = 'queued'\n")
    before = workspace.queue_path.read_text()
    with pytest.raises(QueueError, match=r"entries\[0\]\.id: expected a positive integer, got 0"):
        StageQueue(workspace).add("default", "base")
    assert workspace.queue_path.read_text() == before


def test_parse_accepts_minimal_entries():
    entries = parse_queue({"entries": [{"id": 2, "profile": "p", "stage": "s", "state": "done", "added": 5}]}, "q")
    assert entries[0].added == 5.0 and entries[0].run_id == "" and entries[0].cancel_requested is False


def test_cli_queue(workspace):
    ws = workspace.root
    r = fcwork(ws, "queue", "add", "default", "base", "anneal")
    assert r.returncode == 0, r.stderr
    assert "queued #1: default / base" in r.stdout and "queued #2: default / anneal" in r.stdout
    assert "supervisor is not running" in r.stdout
    r = fcwork(ws, "queue", "move", "2", "1")
    assert r.returncode == 0 and "position 1" in r.stdout, r.stderr
    r = fcwork(ws, "queue", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.index("anneal") < r.stdout.index("base") and "queued" in r.stdout
    r = fcwork(ws, "queue", "cancel", "1")
    assert r.returncode == 0 and "cancelled" in r.stdout, r.stderr
    r = fcwork(ws, "queue", "remove", "1")  # no terminal: refuses without --yes
    assert r.returncode == 2 and "pass --yes" in r.stderr
    r = fcwork(ws, "queue", "remove", "1", "--yes")
    assert r.returncode == 0 and "removed #1" in r.stdout, r.stderr
    r = fcwork(ws, "queue", "move", "2", "sideways")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("fcwork: error:") and "'sideways'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = fcwork(ws, "queue", "add", "default", "nope")
    assert r.returncode == 2 and "no stage named 'nope'" in r.stderr
    workspace.queue_path.write_text("[[entries]]\nid = 'x'\nprofile = 'default'\nstage = 'base'\nstate = 'queued'\n")
    r = fcwork(ws, "queue", "list")
    assert r.returncode == 2 and "entries[0].id: expected a positive integer, got 'x'" in r.stderr


def test_a_stage_waits_for_the_stage_it_starts_from(workspace):
    """default's anneal has init_from = "base": it is not claimed while base's entry is queued or
    running, nor after base was cancelled or failed (it says which entry to resume); it may start
    once base is done, or when no entry of base is in the queue at all."""
    q = StageQueue(workspace)
    q.add("default", "anneal")  # #1, before its base on purpose
    q.add("default", "base")    # #2
    first, orphaned = q.claim_next()
    assert (first.id, first.stage, orphaned) == (2, "base", False)  # anneal was skipped: base is queued
    assert q.get(1).message == "waiting for base (#2) to finish"
    assert q.claim_next()[0].id == 2  # running: handed back as an orphan, anneal still waits
    q.update(2, state="cancelled", message="cancelled at step 40")
    assert q.claim_next() is None and not q.has_work()  # the supervisor may go idle
    assert q.get(1).message == "waiting for base (#2, cancelled): resume #2, or remove this entry"
    assert q.get(1).state == "queued"
    q.resume(2)
    assert q.has_work() and q.claim_next()[0].id == 2
    q.update(2, state="done")
    assert q.claim_next()[0].id == 1  # base is done: anneal starts
    q.update(1, state="done")

    q.add("default", "base")    # #3: a newer base entry fails; a new anneal waits for it, not the old done one
    q.update(3, state="failed", message="crashed")
    q.add("default", "anneal")  # #4
    assert q.claim_next() is None and q.get(4).message.startswith("waiting for base (#3, failed)")
    q.remove(3)
    assert q.claim_next()[0].id == 4  # the latest base entry (#2) is done


def test_an_entry_with_its_run_created_never_waits(workspace):
    q = StageQueue(workspace)
    q.add_many("default", ["base", "anneal"])
    q.update(1, state="cancelled")
    q.update(2, state="cancelled", run_id="20261126-000000-anneal")  # it had started: init weights are in its run
    q.resume(2)
    assert q.claim_next()[0].id == 2


def test_follow_stops_when_every_unfinished_entry_waits_on_a_cancelled_one(workspace):
    from fcwork.live import _held

    q = StageQueue(workspace)
    q.add_many("default", ["base", "anneal"])
    everything = q.read()
    assert _held(q, everything, everything) == []  # base may run: keep following
    q.update(1, state="cancelled")
    everything = q.read()
    unfinished = [e for e in everything if e.state in ("queued", "running")]
    assert [(e.id, dep.id) for e, dep in _held(q, unfinished, everything)] == [(2, 1)]
