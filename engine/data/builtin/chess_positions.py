"""Built-in source `chess-positions`: positions along games written out as FEN, with the moves that led there.

A chess text corpus carries FEN wherever positions are discussed (puzzle sets, studies, forum posts);
a decoder that has read some can write a board, so the vision stages only have to teach it to read
one off a diagram. Each document follows one game from a real opening's main line through seeded
random legal moves (as the board diagrams do, engine.data.builtin.chess_diagrams), giving the moves
played since the last position, then the position as FEN, who moves, and the material.
"""

from __future__ import annotations

import random
from typing import Iterator

import chess

from engine.data.builtin.openings import OPENINGS


def _count(board: chess.Board, color: bool) -> int:
    return bin(board.occupied_co[color]).count("1")


def document(rng: random.Random) -> str:
    """One game's positions: its opening, then blocks of moves, each followed by the position."""
    opening = OPENINGS[rng.randrange(len(OPENINGS))]
    board = chess.Board()
    for san in opening.san.split():
        board.push_san(san)
    lines = [f"Positions from {opening.name} ({opening.eco})."]
    start, played = chess.Board(), opening.san.split()  # the moves since the last position written
    for _ in range(rng.randint(2, 5)):
        for _ in range(rng.randint(1, 8)):
            legal = list(board.legal_moves)
            if not legal:
                break
            move = legal[rng.randrange(len(legal))]
            played.append(board.san(move))
            board.push(move)
        side = "White" if board.turn else "Black"
        check = ", in check" if board.is_check() else ""
        lines += ["", _movetext(start, played), f"FEN: {board.board_fen()}",
                  f"{side} to move{check}. White has {_count(board, chess.WHITE)} pieces, "
                  f"Black has {_count(board, chess.BLACK)}."]
        start, played = board.copy(), []
        if board.is_game_over():
            break
    return "\n".join(lines) + "\n"


def _movetext(board: chess.Board, sans: list[str]) -> str:
    """Moves from `board` as numbered movetext ("5. Nc3 a6", "5... a6 6. Be2")."""
    out = []
    for i, san in enumerate(sans):
        if board.turn == chess.WHITE:
            out.append(f"{board.fullmove_number}.")
        elif i == 0:
            out.append(f"{board.fullmove_number}...")
        out.append(san)
        board.push_san(san)
    return " ".join(out)


def generate(seed: int) -> Iterator[str]:
    """Documents without end, deterministic for `seed`."""
    rng = random.Random(f"chess-positions:{seed}")
    while True:
        yield document(rng)
