"""Chess probe: from held-out PGN game prefixes, is the model's next move legal, and is it the game's move?

An item is a game cut just before one of its moves (the prompt is the game's own text up to
there, tags included, without the space before the move); python-chess replays the prefix and
judges the first move the model writes: legal (parse_san accepts it in that position) and
matching (the same move as played).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

import chess

from engine.eval.probes import LanguageModel, ProbeResult, clip, complete_items, shares

NAME = "chess"
DOMAIN = "chess"
VERSION = 1
MAX_NEW_TOKENS = 8
MIN_PLY = 2

# Movetext pieces: comments, move numbers ("12." / "12..."), results, and anything else (a move).
_TOKEN = re.compile(r"\{[^}]*\}|\d+\.(?:\.\.)?|1-0|0-1|1/2-1/2|\*|[^\s{}]+")
_MOVE_NUMBER = re.compile(r"^\d+\.+")


@dataclass(frozen=True)
class ChessItem:
    prompt: str
    fen: str      # the position before the move
    move: str     # the game's move, UCI
    san: str


def _movetext_start(text: str) -> int:
    """Offset where the moves begin: after the tag section (lines starting with '['), if any."""
    pos = 0
    for line in text.splitlines(keepends=True):
        if line.startswith("[") or not line.strip():
            pos += len(line)
            continue
        break
    return pos


def plies(text: str) -> list[tuple[int, str, chess.Board]]:
    """(offset of the move in text, SAN, board before it) for each move, up to a comment, a result
    or anything python-chess cannot play."""
    board = chess.Board()
    out = []
    start = _movetext_start(text)
    for m in _TOKEN.finditer(text, start):
        tok = m.group(0)
        if _MOVE_NUMBER.match(tok) and tok.rstrip(".").isdigit():
            continue
        if tok.startswith("{") or tok in ("1-0", "0-1", "1/2-1/2", "*"):
            break
        try:
            move = board.parse_san(tok)
        except ValueError:
            break
        out.append((m.start(), tok, board.copy(stack=False)))
        board.push(move)
    return out


def build_items(texts: Sequence[str], limit: int, seed: int) -> list[ChessItem]:
    """One item per game (up to `limit`): the game cut before a move picked at random past MIN_PLY."""
    rng = random.Random(f"chess:{seed}")
    items = []
    for text in texts:
        if len(items) >= limit:
            break
        moves = plies(text)
        if len(moves) <= MIN_PLY:
            continue
        offset, san, board = moves[rng.randrange(MIN_PLY, len(moves))]
        # Spaces stay with the move (SentencePiece pieces start with them), so the prompt ends before them.
        items.append(ChessItem(text[:offset].rstrip(" "), board.fen(), board.parse_san(san).uci(), san))
    return items


def first_move(completion: str) -> str:
    """The first move-like token the model wrote (a leading move number and !? marks dropped)."""
    for tok in completion.split():
        tok = _MOVE_NUMBER.sub("", tok)
        if tok:
            return tok.rstrip("!?")
    return ""


def check(item: ChessItem, completion: str) -> dict:
    """{"move", "legal", "match"} for the model's completion at this item."""
    san = first_move(completion)
    board = chess.Board(item.fen)
    try:
        move = board.parse_san(san) if san else None
    except ValueError:
        move = None
    return {"move": san, "legal": move is not None, "match": move is not None and move.uci() == item.move}


def _move_written(text: str) -> bool:
    """Stop once a move token is complete (whitespace after something that is not a move number)."""
    parts = text.split()
    return bool(parts) and text[-1:].isspace() and bool(first_move(text))


def run(lm: LanguageModel, texts: Sequence[str], limit: int, seed: int) -> ProbeResult:
    items = build_items(texts, limit, seed)
    verdicts, examples = complete_items(
        lm, items, [item.prompt for item in items], MAX_NEW_TOKENS, [_move_written] * len(items),
        lambda item, out: check(item, out.text),
        lambda item, text: {"prompt": clip(item.prompt), "completion": text, "expected": item.san})
    return ProbeResult(NAME, VERSION, shares(verdicts, legal="legal", match="match"), len(items), examples)
