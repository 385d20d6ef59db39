"""The words of the run-folder and queue protocol, in one place: run states, queue entry states,
event types, mix policies, error sources and the exit codes the trainer and the supervisor share.

They are plain strings and ints (what events.jsonl and queue.toml hold), grouped in namespaces,
so a comparison with a value read from a file needs no conversion.
"""

from __future__ import annotations


class RunState:
    """A run's state, as its last `status` event says (`created` before any)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    CRASHED = "crashed"  # never written: what a reader says of a live state whose trainer is gone
    LIVE = frozenset({STARTING, RUNNING, STOPPING})
    FINAL = frozenset({STOPPED, FINISHED, FAILED})


class EntryState:
    """A queue entry's state in queue.toml."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ALL = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
    ACTIVE = frozenset({QUEUED, RUNNING})
    FINAL = frozenset({DONE, FAILED, CANCELLED})
    RESUMABLE = (FAILED, CANCELLED)


class Event:
    """The `type` of an events.jsonl line."""

    STATUS = "status"
    STEP = "step"
    EVAL = "eval"
    MIX = "mix"
    CHECKPOINT = "checkpoint"
    ERROR = "error"
    ANSWER = "answer"
    SUGGESTION = "suggestion"  # a mix the policy proposes at an eval (engine/train/suggest.py)


class MixPolicy:
    """A stage's `mix_policy`; AUTO is also the `source` of a `mix` event the policy applied itself."""

    FIXED = "fixed"
    SUGGEST = "suggest"
    AUTO = "auto"


class Answer:
    """The `outcome` of an `answer` event: what became of a control request."""

    APPLIED = "applied"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"


class Source:
    """Who wrote an `error` event."""

    CONTROL = "control"
    TRAINER = "trainer"
    SUPERVISOR = "supervisor"


EXIT_OK = 0
EXIT_USER_ERROR = 2  # the trainer refused its input: the supervisor fails the entry, no restart
