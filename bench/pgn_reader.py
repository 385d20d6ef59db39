"""PGN source throughput: our reader (python-chess's read_game with HeadersBuilder: tags parsed,
movetext kept as written) against the full parse (python-chess's GameBuilder + StringExporter,
what `validate_moves = true` does), on the same Lichess-style games with clock comments.

    python bench/pgn_reader.py [--games 3000]
"""

from __future__ import annotations

import argparse
import io
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import chess  # noqa: E402

from engine.data.pgn import GameFilter, LineReader, iter_games  # noqa: E402


def make_pgn(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    pool = []
    for _ in range(100):
        board, sans = chess.Board(), []
        for _ in range(rng.randint(30, 110)):
            legal = list(board.legal_moves)
            if not legal:
                break
            move = rng.choice(legal)
            sans.append(board.san(move))
            board.push(move)
        pool.append(" ".join((f"{i // 2 + 1}. " if i % 2 == 0 else "") + f"{m} {{ [%clk 0:02:{i % 60:02d}] }}"
                             for i, m in enumerate(sans)))
    games = [f'[Event "Rated Blitz game"]\n[Site "https://lichess.org/{k:08d}"]\n[White "w{k}"]\n[Black "b{k}"]\n'
             f'[Result "*"]\n[WhiteElo "{rng.randint(1200, 2600)}"]\n[BlackElo "{rng.randint(1200, 2600)}"]\n'
             f'[TimeControl "180+2"]\n\n{rng.choice(pool)} *\n\n' for k in range(n)]
    return "".join(games).encode()


def run(data: bytes, validate: bool) -> tuple[float, int]:
    start = time.perf_counter()
    kept = sum(doc is not None for doc, _, _ in iter_games(LineReader(io.BytesIO(data)), GameFilter(min_elo=1600),
                                                           comments=False, validate_moves=validate))
    return time.perf_counter() - start, kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--games", type=int, default=3000)
    args = ap.parse_args()
    data = make_pgn(args.games)
    mb = len(data) / 1e6
    ours, kept = run(data, validate=False)
    full, kept_full = run(data, validate=True)
    assert kept == kept_full
    print(f"PGN, {args.games} games ({mb:.1f} MB), min_elo 1600 keeps {kept}, {platform.machine()}")
    print(f"ours (tags only): {mb / ours:.2f} MB/s ({args.games / ours:,.0f} games/s); full parse + export: "
          f"{mb / full:.2f} MB/s ({args.games / full:,.0f} games/s); ratio {full / ours:.1f}x")


if __name__ == "__main__":
    main()
