"""Chess board diagrams drawn with Pillow, each paired with its FEN and a sentence (known ground truth).

Positions: a real opening's main line (engine.data.builtin.openings) followed by a seeded number
of random legal moves, so boards range from the opening to a scrambled middlegame. The board is
drawn from White's side, a1 bottom left; each piece type has its own silhouette (no font needed),
white pieces light with a dark outline, black pieces dark with a light outline, so a diagram stays
readable at 64 px (8 px a square).
"""

from __future__ import annotations

import random
from typing import Iterator

import chess

from engine.data.builtin.openings import OPENINGS

SQUARE = 24  # pixels a square when drawn; the image pipeline resizes to the stage's size
LIGHT, DARK = (240, 217, 181), (181, 136, 99)
WHITE_FILL, BLACK_FILL = (250, 250, 250), (20, 20, 20)
NAMES = {chess.PAWN: "pawn", chess.KNIGHT: "knight", chess.BISHOP: "bishop", chess.ROOK: "rook",
         chess.QUEEN: "queen", chess.KING: "king"}


def _shape(piece: int, x: int, y: int, s: int) -> list[tuple[str, list]]:
    """Polygons/ellipses of a piece in the square at (x, y) of side s: (kind, points)."""
    def p(fx: float, fy: float) -> tuple[int, int]:
        return (x + round(fx * s), y + round(fy * s))

    if piece == chess.PAWN:
        return [("ellipse", [p(.35, .3), p(.65, .6)]), ("polygon", [p(.3, .8), p(.7, .8), p(.5, .5)])]
    if piece == chess.KNIGHT:
        return [("polygon", [p(.25, .85), p(.75, .85), p(.7, .2), p(.45, .15), p(.2, .45), p(.45, .45)])]
    if piece == chess.BISHOP:
        return [("polygon", [p(.5, .1), p(.72, .5), p(.62, .85), p(.38, .85), p(.28, .5)])]
    if piece == chess.ROOK:
        return [("polygon", [p(.22, .15), p(.36, .15), p(.36, .28), p(.44, .28), p(.44, .15), p(.56, .15),
                             p(.56, .28), p(.64, .28), p(.64, .15), p(.78, .15), p(.72, .85), p(.28, .85)])]
    if piece == chess.QUEEN:
        return [("polygon", [p(.15, .2), p(.33, .5), p(.5, .12), p(.67, .5), p(.85, .2), p(.75, .85), p(.25, .85)])]
    return [("polygon", [p(.42, .08), p(.58, .08), p(.58, .3), p(.8, .3), p(.8, .45), p(.58, .45), p(.7, .88),
                         p(.3, .88), p(.42, .45), p(.2, .45), p(.2, .3), p(.42, .3)])]


_EMPTY: dict[int, object] = {}


def _empty_board(square: int):
    from PIL import Image, ImageDraw

    if square not in _EMPTY:
        img = Image.new("RGB", (8 * square, 8 * square))
        draw = ImageDraw.Draw(img)
        for f in range(8):
            for r in range(8):
                x, y = f * square, (7 - r) * square
                draw.rectangle([x, y, x + square - 1, y + square - 1], fill=LIGHT if (f + r) % 2 else DARK)
        _EMPTY[square] = img
    return _EMPTY[square].copy()


def draw_board(board: chess.Board, square: int = SQUARE):
    """The board as an RGB Pillow image of 8 x `square` pixels a side."""
    from PIL import ImageDraw

    img = _empty_board(square)
    draw = ImageDraw.Draw(img)
    for sq, piece in board.piece_map().items():
        x, y = chess.square_file(sq) * square, (7 - chess.square_rank(sq)) * square
        fill, line = (WHITE_FILL, BLACK_FILL) if piece.color else (BLACK_FILL, WHITE_FILL)
        for kind, pts in _shape(piece.piece_type, x, y, square):
            getattr(draw, kind)(pts, fill=fill, outline=line)
    return img


def positions(rng: random.Random) -> Iterator[tuple[chess.Board, str]]:
    """Boards along one game: a real opening's main line, then random legal moves, a board every few
    plies (copies), with the opening's name."""
    opening = OPENINGS[rng.randrange(len(OPENINGS))]
    board = chess.Board()
    for san in opening.san.split():
        board.push_san(san)
    for _ in range(rng.randint(2, 6)):
        for _ in range(rng.randint(1, 8)):  # at least one move past the book: fewer repeated boards
            moves = list(board.legal_moves)
            if not moves:
                return
            board.push(moves[rng.randrange(len(moves))])
        yield board.copy(stack=False), opening.name


def describe(board: chess.Board, opening: str) -> str:
    """A sentence about the position that the diagram shows."""
    side = "White" if board.turn else "Black"
    counts = {c: sum(len(board.pieces(t, c)) for t in NAMES) for c in (chess.WHITE, chess.BLACK)}
    check = " and is in check" if board.is_check() else ""
    return (f"A chess diagram from {opening} after {board.fullmove_number - (board.turn == chess.WHITE)} moves: "
            f"{side} to move{check}; White has {counts[chess.WHITE]} pieces, Black has {counts[chess.BLACK]}.")


def generate(seed: int, count: int = 600):
    """`count` diagrams (ImageSample), each with two captions: its FEN and a sentence."""
    from engine.data.imagesources import ImageSample

    rng = random.Random(seed * 7919 + 17)
    i = 0
    while i < count:
        for board, opening in positions(rng):
            if i >= count:
                return
            fen = board.board_fen()
            yield ImageSample(f"chess-{i}", draw_board(board), [f"FEN: {fen}", describe(board, opening)],
                              {"fen": fen, "turn": "w" if board.turn else "b"})
            i += 1
