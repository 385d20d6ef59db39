"""Built-in source `chess-games`: PGN games played by a small built-in engine from real openings.

The move chooser is a cheap one-ply heuristic (material won, pieces left hanging, checks,
mates, development) with per-game noise, so games look plausible and generate fast. SAN and
the PGN text are written here from the legal-move list the player already made, so no move
list is generated twice (python-chess's exporter would replay the game to write SAN). If a
`stockfish` binary is on PATH, some players are Stockfish at a small node limit instead.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from typing import Iterator

import chess

from engine.data.builtin.openings import OPENINGS, Opening

VALUE = (0, 100, 320, 330, 500, 900, 0)  # indexed by chess piece type (PAWN=1 .. KING=6)
PIECE_LETTER = ("", "", "N", "B", "R", "Q", "K")
CENTER_BONUS = tuple(  # a square's closeness to the centre, 0 (corner) to 6 (centre)
    6 - (abs(2 * chess.square_file(sq) - 7) + abs(2 * chess.square_rank(sq) - 7)) // 2 for sq in chess.SQUARES
)
PLAYERS = (
    "Ada Lindqvist", "Bruno Farias", "Chen Wei", "Dmitri Volkov", "Elena Marquez", "Farid Haddad",
    "Grace Okafor", "Hiro Tanaka", "Ingrid Berg", "Jonas Keller", "Kavya Rao", "Liam O'Neill",
    "Maya Cohen", "Nikolai Petrov", "Olga Sorensen", "Pablo Ruiz", "Quinn Avery", "Rosa Bianchi",
    "Samir Nasser", "Tamsin Clarke", "Uma Patel", "Viktor Horvat", "Wen Li", "Ximena Torres",
    "Yusuf Demir", "Zofia Nowak", "FCBot 0.1", "FCBot 0.2", "Pawnstorm", "Knightmare",
)
EVENTS = (
    "Casual Game", "Club Championship", "Rapid Open", "Engine Sparring", "Online Blitz Arena",
    "Training Match", "Correspondence Friendly", "City Open", "Weekend Swiss", "Simul Exhibition",
)
SITES = ("Online", "Berlin GER", "Lyon FRA", "Pune IND", "Toronto CAN", "Oslo NOR", "Bilbao ESP", "?")


@dataclass
class Player:
    """How one side plays a game: noise on the move scores, and an optional Stockfish node limit."""

    name: str
    noise: float
    stockfish_nodes: int = 0


@dataclass
class GameRecord:
    """A finished game: the SAN moves, its result and how it ended."""

    sans: list[str]
    result: str
    reason: str  # checkmate, stalemate, insufficient material, 75-move rule, repetition, resignation,
    # agreement or adjudication
    termination: str  # the PGN Termination tag: "normal" or "adjudication"


def _material(board: chess.Board, color: bool) -> int:
    mask = board.occupied_co[color]
    return (
        100 * chess.popcount(board.pawns & mask) + 320 * chess.popcount(board.knights & mask)
        + 330 * chess.popcount(board.bishops & mask) + 500 * chess.popcount(board.rooks & mask)
        + 900 * chess.popcount(board.queens & mask)
    )


def _position_key(board: chess.Board) -> tuple:
    """What makes two positions the same for the repetition rule (pieces, side, castling, e.p.)."""
    return (
        board.pawns, board.knights, board.bishops, board.rooks, board.queens, board.kings,
        board.occupied_co[chess.WHITE], board.turn, board.castling_rights, board.ep_square,
    )


def _san_base(board: chess.Board, move: chess.Move, legal: list[chess.Move]) -> str:
    """SAN of a legal move without its check suffix, disambiguated against the legal moves."""
    if board.is_castling(move):
        return "O-O" if chess.square_file(move.to_square) > chess.square_file(move.from_square) else "O-O-O"
    piece = board.piece_type_at(move.from_square)
    capture = board.is_capture(move)
    to_name = chess.SQUARE_NAMES[move.to_square]
    if piece == chess.PAWN:
        san = (chess.FILE_NAMES[chess.square_file(move.from_square)] + "x" + to_name) if capture else to_name
        if move.promotion:
            san += "=" + PIECE_LETTER[move.promotion]
        return san
    others = [
        m.from_square for m in legal
        if m.to_square == move.to_square and m.from_square != move.from_square
        and board.piece_type_at(m.from_square) == piece
    ]
    prefix = PIECE_LETTER[piece]
    if others:
        file, rank = chess.square_file(move.from_square), chess.square_rank(move.from_square)
        if all(chess.square_file(sq) != file for sq in others):
            prefix += chess.FILE_NAMES[file]
        elif all(chess.square_rank(sq) != rank for sq in others):
            prefix += chess.RANK_NAMES[rank]
        else:
            prefix += chess.SQUARE_NAMES[move.from_square]
    return prefix + ("x" if capture else "") + to_name


def _attacked(board: chess.Board, color: bool) -> int:
    """Bitmask of the squares `color` attacks (pawn captures included)."""
    mask = 0
    for sq in chess.scan_reversed(board.occupied_co[color]):
        mask |= board.attacks_mask(sq)
    return mask


@dataclass
class Threats:
    """Attack maps of one position, computed once per move choice instead of once per move."""

    theirs: int
    ours: int
    their_pawns: int
    endgame: bool


def _threats(board: chess.Board) -> Threats:
    us, them = board.turn, not board.turn
    pawns = 0
    for sq in chess.scan_reversed(board.pawns & board.occupied_co[them]):
        pawns |= chess.BB_PAWN_ATTACKS[them][sq]
    endgame = chess.popcount(board.occupied) <= 12 or not board.queens
    return Threats(_attacked(board, them), _attacked(board, us), pawns, endgame)


def _attacks_from(piece: int, color: bool, sq: int, occupied: int) -> int:
    """Squares a `piece` of `color` on `sq` would attack with `occupied` as the blockers."""
    if piece == chess.PAWN:
        return chess.BB_PAWN_ATTACKS[color][sq]
    if piece == chess.KNIGHT:
        return chess.BB_KNIGHT_ATTACKS[sq]
    if piece == chess.KING:
        return chess.BB_KING_ATTACKS[sq]
    mask = 0
    if piece in (chess.BISHOP, chess.QUEEN):
        mask |= chess.BB_DIAG_ATTACKS[sq][chess.BB_DIAG_MASKS[sq] & occupied]
    if piece in (chess.ROOK, chess.QUEEN):
        mask |= chess.BB_FILE_ATTACKS[sq][chess.BB_FILE_MASKS[sq] & occupied]
        mask |= chess.BB_RANK_ATTACKS[sq][chess.BB_RANK_MASKS[sq] & occupied]
    return mask


def _direct_check(board: chess.Board, move: chess.Move, piece: int) -> bool:
    """Whether the moved piece itself attacks the enemy king afterwards (discovered checks not seen)."""
    king = board.kings & board.occupied_co[not board.turn]
    occupied = (board.occupied & ~chess.BB_SQUARES[move.from_square]) | chess.BB_SQUARES[move.to_square]
    return bool(_attacks_from(move.promotion or piece, board.turn, move.to_square, occupied) & king)


def _cheap_score(board: chess.Board, move: chess.Move, ply: int, t: Threats) -> float:
    """A one-ply guess of a move's worth without making it: gains, risks, checks, development."""
    us = board.turn
    frm, to = move.from_square, move.to_square
    piece = board.piece_type_at(frm)
    score = 0.0
    victim = board.piece_type_at(to)
    if victim:
        score += VALUE[victim]
    elif piece == chess.PAWN and to == board.ep_square:
        score += 100
    if move.promotion:
        score += VALUE[move.promotion] - 100
    moved_value = VALUE[move.promotion or piece]
    to_bb = chess.BB_SQUARES[to]
    if t.theirs & to_bb:
        cheapest = 100 if t.their_pawns & to_bb else 320
        score -= max(0, moved_value - cheapest) if t.ours & to_bb else moved_value
    elif piece != chess.KING and t.theirs & chess.BB_SQUARES[frm]:
        frm_bb = chess.BB_SQUARES[frm]
        if not t.ours & frm_bb or (t.their_pawns & frm_bb and piece != chess.PAWN):
            score += 0.6 * VALUE[piece]  # escaping an attack that would win material
    if piece == chess.KING:
        if board.is_castling(move):
            score += 70
        elif t.endgame:
            score += 6 * (CENTER_BONUS[to] - CENTER_BONUS[frm])
        else:
            score -= 45
    elif piece == chess.PAWN:
        rank = chess.square_rank(to) if us == chess.WHITE else 7 - chess.square_rank(to)
        score += 4 * CENTER_BONUS[to] + (12 * rank if t.endgame else 0)
    else:
        score += 5 * (CENTER_BONUS[to] - CENTER_BONUS[frm])
        back_rank = 0 if us == chess.WHITE else 7
        if ply < 24 and piece in (chess.KNIGHT, chess.BISHOP) and chess.square_rank(frm) == back_rank:
            score += 25  # develop minor pieces
        if ply < 16 and piece == chess.QUEEN:
            score -= 30
    return score


class Engine:
    """Chooses moves for both sides; owns the optional Stockfish process."""

    def __init__(self, use_stockfish: bool = True) -> None:
        self.stockfish = None
        path = shutil.which("stockfish") if use_stockfish else None
        if path:
            import chess.engine as uci

            try:
                self.stockfish = uci.SimpleEngine.popen_uci(path)
                self.stockfish.configure({"Threads": 1, "Hash": 16})
            except (OSError, uci.EngineError):
                self.stockfish = None

    def close(self) -> None:
        if self.stockfish is not None:
            try:
                self.stockfish.quit()
            except Exception:  # the engine may already be gone; nothing to save
                pass
            self.stockfish = None

    def choose(self, board: chess.Board, legal: list[chess.Move], player: Player, ply: int,
               rng: random.Random, game_id: int) -> chess.Move:
        """The move `player` makes from `legal` in `board` (which is left as it was)."""
        if player.stockfish_nodes and self.stockfish is not None:
            import chess.engine as uci

            try:
                played = self.stockfish.play(board, uci.Limit(nodes=player.stockfish_nodes), game=game_id)
                if played.move in legal:
                    return played.move
            except uci.EngineError:
                self.close()
        us = board.turn
        threats = _threats(board)
        ahead = _material(board, us) - _material(board, not us)
        noise = 2.0 * player.noise
        rand = rng.random
        scored = sorted(
            [(_cheap_score(board, m, ply, threats) + noise * rand(), i) for i, m in enumerate(legal)],
            reverse=True,
        )
        # Look closer at the three best guesses and, as often as the player is strong, at every
        # direct check too (one could be mate).
        candidates = scored[:3]
        if rng.random() < 1.0 - player.noise / 60.0:
            pieces = board.piece_type_at
            candidates += [
                c for c in scored[3:]
                if pieces(legal[c[1]].from_square) != chess.KING
                and _direct_check(board, legal[c[1]], pieces(legal[c[1]].from_square))
            ]
        best_move, best = legal[scored[0][1]], -1e18
        # Stalemate needs a nearly bare opponent; skip the costly test otherwise.
        stalemate_possible = chess.popcount(board.occupied_co[not us]) <= 4
        for score, i in candidates:
            move = legal[i]
            board.push(move)
            if board.is_check():
                if not any(board.generate_legal_moves()):
                    board.pop()
                    return move  # mate in one
                score += 35
            elif stalemate_possible and not any(board.generate_legal_moves()):
                score += 300 if ahead < -300 else -3000  # stalemate: welcome only when losing
            board.pop()
            if score > best:
                best_move, best = move, score
        return best_move


def play_game(engine: Engine, opening: Opening, white: Player, black: Player, rng: random.Random,
              game_id: int, max_plies: int) -> GameRecord:
    """Play one game from `opening`'s line to its end; return its SAN moves and result."""
    board = chess.Board()
    sans: list[str] = []
    seen: dict[tuple, int] = {}
    for san in opening.san.split():
        move = board.parse_san(san)
        legal = list(board.generate_legal_moves())
        sans.append(_san_base(board, move, legal))
        board.push(move)
        if board.is_check():
            sans[-1] += "+"
    losing_streak = {chess.WHITE: 0, chess.BLACK: 0}
    while True:
        legal = list(board.generate_legal_moves())
        if not legal:
            if board.is_check():
                sans[-1] = sans[-1].rstrip("+") + "#"
                return GameRecord(sans, "0-1" if board.turn == chess.WHITE else "1-0", "checkmate", "normal")
            return GameRecord(sans, "1/2-1/2", "stalemate", "normal")
        if board.halfmove_clock >= 150:
            return GameRecord(sans, "1/2-1/2", "75-move rule", "normal")
        key = _position_key(board)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] >= 3:
            return GameRecord(sans, "1/2-1/2", "repetition", "normal")
        ply = len(board.move_stack)
        us = board.turn
        deficit = _material(board, not us) - _material(board, us)
        losing_streak[us] = losing_streak[us] + 1 if deficit >= 500 else 0
        if ply >= 30 and losing_streak[us] >= 6 and rng.random() < 0.25:
            return GameRecord(sans, "0-1" if us == chess.WHITE else "1-0", "resignation", "normal")
        if ply >= 60 and abs(deficit) < 150 and rng.random() < 0.03:
            return GameRecord(sans, "1/2-1/2", "agreement", "normal")
        if ply >= max_plies:
            diff = _material(board, chess.WHITE) - _material(board, chess.BLACK)
            result = "1-0" if diff >= 400 else "0-1" if diff <= -400 else "1/2-1/2"
            return GameRecord(sans, result, "adjudication", "adjudication")
        player = white if us == chess.WHITE else black
        move = engine.choose(board, legal, player, ply, rng, game_id)
        san = _san_base(board, move, legal)
        capture_or_promo = board.is_capture(move) or move.promotion
        board.push(move)
        sans.append(san + "+" if board.is_check() else san)
        if capture_or_promo and board.is_insufficient_material():
            return GameRecord(sans, "1/2-1/2", "insufficient material", "normal")


def _movetext(sans: list[str], result: str, comment: str) -> str:
    """Numbered moves wrapped at 80 columns, then the closing comment and result."""
    tokens = []
    for i, san in enumerate(sans):
        if i % 2 == 0:
            tokens.append(f"{i // 2 + 1}.")
        tokens.append(san)
    if comment:
        tokens.extend(["{", *comment.split(), "}"])
    tokens.append(result)
    lines, line = [], ""
    for tok in tokens:
        if line and len(line) + 1 + len(tok) > 79:
            lines.append(line)
            line = tok
        else:
            line = f"{line} {tok}" if line else tok
    lines.append(line)
    return "\n".join(lines)


REASON_COMMENT = {
    "checkmate": "",
    "stalemate": "Stalemate.",
    "insufficient material": "Draw by insufficient material.",
    "75-move rule": "Draw by the 75-move rule.",
    "repetition": "Draw by threefold repetition.",
    "agreement": "Draw agreed.",
    "adjudication": "Move limit reached; adjudicated on material.",
}


def game_pgn(rec: GameRecord, opening: Opening, white: Player, black: Player, rng: random.Random,
             event: str, round_no: int) -> str:
    """The game as PGN text: the seven-tag roster, opening and termination tags, movetext."""
    date = f"{rng.randint(2015, 2024)}.{rng.randint(1, 12):02d}.{rng.randint(1, 28):02d}"
    headers = [
        ("Event", event), ("Site", rng.choice(SITES)), ("Date", date), ("Round", str(round_no)),
        ("White", white.name), ("Black", black.name), ("Result", rec.result),
        ("ECO", opening.eco), ("Opening", opening.name), ("PlyCount", str(len(rec.sans))),
        ("Termination", rec.termination),
    ]
    if rec.reason == "resignation":
        comment = f"{'White' if rec.result == '0-1' else 'Black'} resigns."
    else:
        comment = REASON_COMMENT[rec.reason]
    head = "\n".join(f'[{k} "{v}"]' for k, v in headers)
    return f"{head}\n\n{_movetext(rec.sans, rec.result, comment)}\n"


def _player(rng: random.Random, has_stockfish: bool) -> Player:
    name = rng.choice(PLAYERS)
    if has_stockfish and rng.random() < 0.25:
        nodes = rng.choice((64, 128, 256, 512))
        return Player(f"Stockfish (nodes={nodes})", 0.0, nodes)
    return Player(name, rng.choice((10.0, 20.0, 35.0, 50.0, 70.0)))


def generate(seed: int, use_stockfish: bool = True) -> Iterator[str]:
    """Yield PGN games without end, deterministic for `seed` (and for whether Stockfish is found)."""
    rng = random.Random(seed)
    engine = Engine(use_stockfish)
    try:
        game_id = 0
        while True:
            game_id += 1
            opening = OPENINGS[rng.randrange(len(OPENINGS))]
            white = _player(rng, engine.stockfish is not None)
            black = _player(rng, engine.stockfish is not None)
            while black.name == white.name and not black.stockfish_nodes:
                black = _player(rng, False)
            event = rng.choice(EVENTS)
            max_plies = rng.randrange(120, 260)
            rec = play_game(engine, opening, white, black, rng, game_id, max_plies)
            yield game_pgn(rec, opening, white, black, rng, event, rng.randint(1, 9))
    finally:
        engine.close()
