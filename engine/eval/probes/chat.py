"""Chat probe: does the model answer a chat question in the chat template and end its turn, and is
the answer right?

Items are the synthesised questions of engine.data.builtin.chat_tasks, drawn with the probe's own
seed (the corpus draws with the profile's), in turn a chess position, a Python snippet and a CSV
table. The prompt is the chat template's user turn and the assistant's opening; the answer is the
text before `<|end|>`. Checks: python-chess accepts the first move in the position; the snippet,
run in a fresh `python -I` subprocess with a timeout and its sockets refused, prints the answer;
the table value recomputed from the CSV equals the answer's number. Metrics: `end` (share of
answers that say something and end with `<|end|>`: an empty turn does not count), `correct`, and the
correct share per kind.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from typing import Sequence

import chess

from engine.data.builtin.chat_tasks import KINDS, Task, table_answer, task
from engine.data.chat_template import END, chat_prompt
from engine.eval.probes import LanguageModel, ProbeResult, clip, complete_items, shares

NAME = "chat"
DOMAIN = "chat"  # runs where the run has chat text (the questions themselves are synthesised)
VERSION = 1
MAX_NEW_TOKENS = 24
RUN_TIMEOUT = 5.0
# Prepended to a snippet: no sockets (no network), whatever the snippet imports.
_NO_NETWORK = ("import socket\n"
               "def _refuse(*a, **k):\n    raise OSError('network disabled in the chat probe')\n"
               "socket.socket = socket.create_connection = socket.getaddrinfo = _refuse\n")


def build_items(texts: Sequence[str], limit: int, seed: int) -> list[Task]:
    """`limit` questions, the kinds in turn (texts are not used: the questions are synthesised)."""
    rng = random.Random(f"chat-probe:{seed}")
    return [task(rng, KINDS[i % len(KINDS)]) for i in range(limit)]


def run_snippet(code: str, timeout: float = RUN_TIMEOUT) -> str | None:
    """What `code` prints, run isolated (`python -I`, empty environment, no sockets); None when it fails."""
    try:
        out = subprocess.run([sys.executable, "-I", "-c", _NO_NETWORK + code], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL, env={"PATH": os.defpath})
    except (subprocess.TimeoutExpired, OSError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _number(text: str) -> float | None:
    try:
        return float(text.strip().rstrip("."))
    except ValueError:
        return None


def check(item: Task, completion: str) -> dict:
    """{"answer", "end", "correct"} for the model's completion of this item."""
    ended = END in completion
    answer = completion.split(END)[0].strip()
    correct = False
    if item.kind == "chess":
        words = answer.split()
        try:
            correct = bool(words) and chess.Board(item.subject).parse_san(words[0].rstrip(".,!?")) is not None
        except ValueError:
            correct = False
    elif item.kind == "code":
        printed = run_snippet(item.subject)
        correct = printed is not None and answer == printed
    else:
        ask, _, csv = item.subject.partition("\n")
        want, got = _number(table_answer(csv, ask)), _number(answer)
        correct = want is not None and got is not None and math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-9)
    return {"answer": answer, "end": ended and bool(answer), "correct": bool(correct)}


def run(lm: LanguageModel, texts: Sequence[str], limit: int, seed: int) -> ProbeResult:
    items = build_items(texts, limit, seed)
    verdicts, examples = complete_items(
        lm, items, [chat_prompt(item.question) for item in items], MAX_NEW_TOKENS,
        [lambda text: END in text] * len(items),
        lambda item, out: check(item, out.text),
        lambda item, text: {"prompt": clip(item.question), "completion": text, "expected": item.answer})
    metrics = shares(verdicts, end="end", correct="correct")
    for kind in KINDS:  # the right share of each kind's questions
        metrics.update(shares([v for item, v in zip(items, verdicts) if item.kind == kind], **{kind: "correct"}))
    return ProbeResult(NAME, VERSION, metrics, len(items), examples)
