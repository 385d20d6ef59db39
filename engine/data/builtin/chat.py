"""Built-in source `chat`: short user/assistant exchanges about chess, the stdlib, data and science.

Every answer is computed: legal moves and checks come from python-chess, stdlib examples are
evaluated, data answers are calculated from the table in the question, and science answers
are the worked problems of science_prose. Turns are written with the role symbols of
engine.profile.SPECIAL_SYMBOLS, each turn as `<|role|>` + text + `<|end|>` on its own lines.
"""

from __future__ import annotations

import importlib
import inspect
import random
import statistics
from typing import Callable, Iterator

import chess

from engine.data.builtin.data_tables import draw_table
from engine.data.builtin.openings import OPENINGS
from engine.data.builtin.science_prose import worked_problem
from engine.data.chat_template import ASSISTANT, SYSTEM, USER, turn

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are FusterCluck, a small assistant that knows science, Python, chess and data analysis.",
    "Answer briefly and show your working.",
    "You are a patient tutor. Explain each step.",
)
PIECE_NAMES = {chess.PAWN: "pawn", chess.KNIGHT: "knight", chess.BISHOP: "bishop", chess.ROOK: "rook",
               chess.QUEEN: "queen", chess.KING: "king"}

Exchange = list[tuple[str, str]]  # (user text, assistant text) pairs


def numbered(sans: list[str]) -> str:
    """SAN moves with move numbers: ['e4', 'e5'] -> '1. e4 e5'."""
    out = []
    for i, san in enumerate(sans):
        out.append(f"{i // 2 + 1}. {san}" if i % 2 == 0 else san)
    return " ".join(out)


def chess_opening(rng: random.Random) -> Exchange:
    op = OPENINGS[rng.randrange(len(OPENINGS))]
    moves = numbered(op.san.split())
    if rng.random() < 0.5:
        q = rng.choice((f"What are the moves of the {op.name}?", f"How does the {op.name} start?",
                        f"Can you show me the main line of the {op.name}?"))
        a = f"The {op.name} (ECO {op.eco}) goes {moves}."
    else:
        q = rng.choice((f"Which opening is {moves}?", f"I played {moves}. What is this opening called?"))
        a = f"That is the {op.name}, classified as ECO {op.eco}."
    board = chess.Board()
    for san in op.san.split():
        board.push_san(san)
    n_legal = board.legal_moves.count()
    side = "White" if board.turn == chess.WHITE else "Black"
    a += f" After these moves it is {side} to move, with {n_legal} legal moves available."
    return [(q, a)]


def _random_position(rng: random.Random) -> chess.Board:
    op = OPENINGS[rng.randrange(len(OPENINGS))]
    board = chess.Board()
    for san in op.san.split():
        board.push_san(san)
    for _ in range(rng.randrange(0, 16)):
        legal = list(board.legal_moves)
        if not legal:
            break
        board.push(legal[rng.randrange(len(legal))])
    return board


def chess_position(rng: random.Random) -> Exchange:
    board = _random_position(rng)
    fen = board.fen()
    side = "White" if board.turn == chess.WHITE else "Black"
    kind = rng.randrange(3)
    if board.is_game_over():
        kind = 2
    if kind == 0:
        caps = sorted(board.san(m) for m in board.legal_moves if board.is_capture(m))
        q = f"In the position {fen}, which captures can {side} make?"
        if caps:
            details = []
            for m in sorted((m for m in board.legal_moves if board.is_capture(m)), key=board.san):
                victim = board.piece_at(m.to_square) or chess.Piece(chess.PAWN, not board.turn)  # en passant
                details.append(f"{board.san(m)} takes the {PIECE_NAMES[victim.piece_type]} on "
                               f"{chess.square_name(m.to_square)}")
            a = f"{side} has {len(caps)} capture{'s' if len(caps) > 1 else ''}: " + "; ".join(details) + "."
        else:
            a = f"None: {side} has no legal capture in this position."
    elif kind == 1:
        checks = sorted(board.san(m) for m in board.legal_moves if board.gives_check(m))
        q = f"Position (FEN): {fen}. Which moves give check?"
        a = (f"{side} can give check with {', '.join(checks)}." if checks
             else f"No legal move gives check here for {side}.")
    else:
        q = f"Is the side to move in check in {fen}? How many legal moves are there?"
        n = board.legal_moves.count()
        if board.is_checkmate():
            a = f"{side} is checkmated: in check with no legal move. The game is over."
        elif board.is_stalemate():
            a = f"{side} is stalemated: not in check but without a legal move, so the game is drawn."
        else:
            a = (f"{side} is {'in check' if board.is_check() else 'not in check'} and has {n} legal "
                 f"move{'s' if n != 1 else ''}.")
    return [(q, a)]


def _stdlib_examples(rng: random.Random) -> list[tuple[str, str]]:
    """(qualified name, expression) pairs of safe stdlib calls with random arguments."""
    a, b = rng.randrange(2, 400), rng.randrange(2, 400)
    xs = [rng.randrange(1, 50) for _ in range(rng.randrange(3, 8))]
    words = rng.sample(["apple", "banana", "cherry", "date", "elder", "fig", "grape", "kiwi", "lemon", "mango"], 4)
    return [
        ("math.gcd", f"math.gcd({a}, {b})"),
        ("math.comb", f"math.comb({rng.randrange(5, 30)}, {rng.randrange(1, 5)})"),
        ("math.isqrt", f"math.isqrt({a * b})"),
        ("math.hypot", f"math.hypot({rng.randrange(1, 20)}, {rng.randrange(1, 20)})"),
        ("statistics.median", f"statistics.median({xs})"),
        ("statistics.mean", f"statistics.mean({xs})"),
        ("statistics.pstdev", f"round(statistics.pstdev({xs}), 4)"),
        ("statistics.mode", f"statistics.mode({xs + xs[:1]})"),
        ("bisect.bisect_left", f"bisect.bisect_left({sorted(xs)}, {rng.randrange(1, 50)})"),
        ("heapq.nlargest", f"heapq.nlargest(2, {xs})"),
        ("itertools.accumulate", f"list(itertools.accumulate({xs}))"),
        ("itertools.combinations", f"len(list(itertools.combinations({words}, 2)))"),
        ("textwrap.shorten", f"textwrap.shorten({' '.join(words * 3)!r}, width={rng.randrange(20, 40)})"),
        ("os.path.splitext", f"os.path.splitext({'/data/' + words[0] + rng.choice(['.csv', '.tar.gz', '.py'])!r})"),
        ("string.capwords", f"string.capwords({' '.join(words)!r})"),
        ("collections.Counter", f"collections.Counter({''.join(words)[:12]!r}).most_common(2)"),
        ("fractions.Fraction", f"fractions.Fraction({a}, {b})"),
        ("calendar.isleap", f"calendar.isleap({rng.randrange(1890, 2100)})"),
        ("zlib.crc32", f"zlib.crc32({words[0].encode()!r})"),
        ("difflib.get_close_matches", f"difflib.get_close_matches({words[0][:-1] + 'x'!r}, {words})"),
        ("shlex.split", f"shlex.split({'cp ' + repr('my file.txt') + ' /tmp/' + words[1]!r})"),
        ("functools.reduce", f"functools.reduce(operator.mul, {xs[:4]})"),
        ("json.dumps", f"json.dumps({dict(zip(words[:2], xs[:2]))!r}, sort_keys=True)"),
    ]


_MODULES = ("math", "statistics", "bisect", "heapq", "itertools", "textwrap", "os", "string", "collections",
            "fractions", "calendar", "zlib", "difflib", "shlex", "functools", "operator", "json")


def _resolve(qualname: str):
    mod_name, _, attr = qualname.rpartition(".")
    return getattr(importlib.import_module(mod_name), attr)


def stdlib_function(rng: random.Random) -> Exchange:
    name, expr = rng.choice(_stdlib_examples(rng))
    obj = _resolve(name)
    doc = inspect.getdoc(obj) or ""
    attr = name.rpartition(".")[2]
    paragraphs = [p for p in doc.split("\n\n") if p.strip() and not p.startswith(attr + "(")] or [doc]
    summary = paragraphs[0].replace("\n", " ").strip()
    ns = {m: importlib.import_module(m) for m in _MODULES}
    result = eval(expr, ns)  # our own expression from _stdlib_examples, never user input
    try:
        sig = f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        sig = name
    q = rng.choice((f"What does {name} do in Python?", f"Can you explain {name} with an example?",
                    f"How do I use {name}?"))
    imports = "".join(f">>> import {m}\n" for m in _MODULES if f"{m}." in expr)
    a = (f"`{sig}` comes from the `{name.rpartition('.')[0]}` module of the standard library. Its documentation says: "
         f"{summary}\n\nFor example:\n\n{imports}>>> {expr}\n{result!r}")
    return [(q, a)]


def data_question(rng: random.Random) -> Exchange:
    t = draw_table(rng)
    t.rows = t.rows[: rng.randint(4, 8)]
    groups, sums = t.names("group"), t.names("sum")
    kind = rng.randrange(3) if groups and sums else rng.randrange(2)
    col = rng.choice(sums if kind == 2 else t.names("num"))
    values = t.values(col)
    unit = t.column(col).unit
    unit = f" {unit}" if unit else ""
    table = t.csv_text()
    if kind == 0:
        mean = statistics.mean(values)
        q = f"Here is some data:\n\n{table}\n\nWhat is the average {col}?"
        a = (f"Add the {len(values)} values of {col}: {' + '.join(map(str, values))} = {round(sum(values), 4)}. "
             f"Divide by {len(values)}: the average {col} is {round(mean, 3)}{unit}.")
    elif kind == 1:
        i = max(range(len(values)), key=lambda k: (values[k], -k))
        row = dict(zip(t.names(), t.rows[i]))
        who = ", ".join(f"{c} = {row[c]}" for c in t.names("cat"))
        q = f"{table}\n\nWhich row has the largest {col}, and by how much does it beat the smallest?"
        a = (f"The largest {col} is {values[i]}{unit}, in the row with {who}. The smallest is {min(values)}, so the "
             f"difference is {round(values[i] - min(values), 4)}{unit}.")
    else:
        g = rng.choice(groups)
        sums: dict = {}
        for key, v in zip(t.values(g), values):
            sums[key] = sums.get(key, 0) + v
        ranked = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
        q = f"Given this table:\n\n{table}\n\nwhich {g} has the highest total {col}?"
        lines = "\n".join(f"- {k}: {round(v, 4)}{unit}" for k, v in ranked)
        a = (f"Summing {col} for each {g}:\n{lines}\n\nSo {ranked[0][0]} has the highest total, "
             f"{round(ranked[0][1], 4)}{unit}.")
    return [(q, a)]


def science_question(rng: random.Random) -> Exchange:
    w = worked_problem(rng)
    return [(w.problem, w.solution)]


TOPICS: tuple[Callable[[random.Random], Exchange], ...] = (
    chess_opening, chess_position, stdlib_function, data_question, science_question,
)
FOLLOW_UPS = ("Thanks! Another one:", "Great. Next question.", "Got it. One more:", "OK, and this one?")


def conversation(rng: random.Random) -> str:
    """One chat document: an optional system turn, then one to three user/assistant exchanges."""
    parts = []
    if rng.random() < 0.6:
        parts.append(turn(SYSTEM, rng.choice(SYSTEM_PROMPTS)))
    topic = TOPICS[rng.randrange(len(TOPICS))]
    turns = rng.choice((1, 1, 1, 2, 2, 3))
    for i in range(turns):
        for question, answer in topic(rng):
            if i:
                question = f"{rng.choice(FOLLOW_UPS)} {question}"
            parts.append(turn(USER, question))
            parts.append(turn(ASSISTANT, answer))
    return "\n".join(parts) + "\n"


def generate(seed: int) -> Iterator[str]:
    """Yield conversations without end, deterministic for `seed`."""
    rng = random.Random(seed)
    while True:
        yield conversation(rng)
