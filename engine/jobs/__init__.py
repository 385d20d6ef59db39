"""Runs and the processes around them: run folders, events, control requests, the queue, the supervisor.

Owns `runs/<run-id>/` (rundir.py names every file in it), `queue.toml` and the supervisor's lock
and log. May import the core, `engine.data` and `engine.model.config`; never torch, eval, train
or export: the supervisor starts the trainer by module name, it does not import it.
"""
