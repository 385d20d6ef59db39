"""Built-in source `chat-tasks`: short questions about the default corpus's own kinds of text, each
with one checkable answer, for chat SFT and the chat probe (engine.eval.probes.chat).

Three kinds: a chess position (FEN) and one legal move for the side to move (python-chess draws
it), a small Python snippet and what it prints (computed by running it here), a small CSV table
and a value computed from it (how many rows, the largest value of a column). `task(rng)` gives the
structured item the probe checks; `generate(seed)` the conversations the corpus holds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import chess

from engine.data.builtin.chat import _random_position
from engine.data.builtin.data_tables import draw_table
from engine.data.chat_template import ASSISTANT, SYSTEM, USER, render

KINDS = ("chess", "code", "table")
SYSTEM_PROMPT = "Answer with the answer only."
WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "plum", "kiwi", "orange", "pear")


@dataclass(frozen=True)
class Task:
    """One question: its kind, the user's text, the reference answer, and what checks it
    (a FEN, a snippet, or the CSV table)."""

    kind: str
    question: str
    answer: str
    subject: str

    def conversation(self, system: bool = False) -> str:
        turns = [(SYSTEM, SYSTEM_PROMPT)] if system else []
        return render(turns + [(USER, self.question), (ASSISTANT, self.answer)]) + "\n"


def chess_task(rng: random.Random) -> Task:
    board = _random_position(rng)
    while board.is_game_over():
        board.pop()
    side = "White" if board.turn == chess.WHITE else "Black"
    moves = sorted(board.san(m) for m in board.legal_moves)
    q = f"Position (FEN): {board.fen()}\nName one legal move for {side}."
    return Task("chess", q, rng.choice(moves), board.fen())


def _snippet(rng: random.Random) -> str:
    a, b = rng.randrange(2, 20), rng.randrange(2, 20)
    w = rng.choice(WORDS)
    xs = [rng.randrange(1, 10) for _ in range(rng.randrange(3, 6))]
    return rng.choice((
        f"print({a} + {b})",
        f"print({a} * {b})",
        f"print(len({w!r}))",
        f"print({w!r}.upper())",
        f"print({w!r}[::-1])",
        f"print(max({xs}))",
        f"print(sum({xs}))",
        f"print(sorted({xs}))",
        f"x = {a}\nx += {b}\nprint(x)",
        f"print({w!r}[{rng.randrange(0, 3)}])",
    ))


def code_task(rng: random.Random) -> Task:
    code = _snippet(rng)
    out: list[str] = []
    exec(code, {"print": lambda *v: out.append(" ".join(map(str, v)))})  # our own snippet, never user input
    q = f"What does this Python code print?\n```python\n{code}\n```"
    return Task("code", q, "\n".join(out), code)


def table_answer(csv: str, ask: str) -> str:
    """The value a table question asks for, computed from the CSV text (`rows`, or `max:COLUMN`)."""
    lines = csv.strip().splitlines()
    if ask == "rows":
        return str(len(lines) - 1)
    col = lines[0].split(",").index(ask.split(":", 1)[1])
    cells = [line.split(",")[col] for line in lines[1:]]
    return max(cells, key=float)


def table_task(rng: random.Random) -> Task:
    t = draw_table(rng)
    t.rows = t.rows[: rng.randint(3, 6)]
    nums = t.names("num")
    keep = [t.names()[0]] + rng.sample([n for n in nums if n != t.names()[0]], min(2, len(nums)))
    idx = [t.names().index(n) for n in keep]
    csv = "\n".join([",".join(keep)] + [",".join(t.cell_text(t.columns[i], row[i]) for i in idx) for row in t.rows])
    num_cols = [n for n in keep[1:] if n in nums]
    if num_cols and rng.random() < 0.5:
        col = rng.choice(num_cols)
        ask, q = f"max:{col}", f"{csv}\n\nWhat is the largest {col} in this table?"
    else:
        ask, q = "rows", f"{csv}\n\nHow many rows of data does this table have?"
    return Task("table", q, table_answer(csv, ask), f"{ask}\n{csv}")


MAKERS = {"chess": chess_task, "code": code_task, "table": table_task}


def task(rng: random.Random, kind: str | None = None) -> Task:
    """One task of `kind` (a random kind when None)."""
    return MAKERS[kind or rng.choice(KINDS)](rng)


def generate(seed: int) -> Iterator[str]:
    """Conversations without end, deterministic for `seed`: one question and its answer each."""
    rng = random.Random(f"chat-tasks:{seed}")
    while True:
        yield task(rng).conversation(system=rng.random() < 0.3)
