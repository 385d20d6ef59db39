"""PGN files as documents, one game each, read with python-chess's reader.

Games are filtered on their tag pairs before their moves are parsed (rating, time control,
result), so a filter that drops most of a Lichess dump costs little. A kept game is written back
with python-chess's exporter: tag pairs kept or dropped, comments (`{[%clk 0:03:00]}`) kept or
dropped, the moves on one line. A game with illegal or unreadable moves, or with none, is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO, Iterator

import chess
import chess.pgn

CLASS_LIMITS = (("ultrabullet", 29), ("bullet", 179), ("blitz", 479), ("rapid", 1499))  # Lichess's bounds
_TC_RE = re.compile(r"^(\d+)(?:\+(\d+))?$")


def time_class(tc: str) -> str:
    """Lichess's class of a TimeControl tag (`180+2` -> blitz): base + 40 x increment seconds; `-` is correspondence."""
    if tc.strip() == "-":
        return "correspondence"
    m = _TC_RE.match(tc.strip())
    if not m:
        return ""
    estimate = int(m.group(1)) + 40 * int(m.group(2) or 0)
    for name, limit in CLASS_LIMITS:
        if estimate <= limit:
            return name
    return "classical"


@dataclass(frozen=True)
class GameFilter:
    """Which games to keep: both players rated at least min_elo, a time control and a result among those listed."""

    min_elo: int = 0
    time_control: tuple[str, ...] = ()
    results: tuple[str, ...] = ()

    def reject(self, headers: "chess.pgn.Headers") -> str | None:
        """Why a game with these tag pairs is dropped, or None to keep it."""
        if self.min_elo:
            for tag in ("WhiteElo", "BlackElo"):
                value = headers.get(tag, "")
                if not value.isdigit():
                    return "no rating"
                if int(value) < self.min_elo:
                    return "rating below min_elo"
        if self.time_control:
            tc = headers.get("TimeControl", "")
            if tc not in self.time_control and time_class(tc) not in self.time_control:
                return "time control"
        if self.results and headers.get("Result", "*") not in self.results:
            return "result"
        return None


class _Filtering(chess.pgn.GameBuilder):
    """python-chess's game builder that skips the moves of a game its tag pairs rule out."""

    game_filter = GameFilter()

    def begin_game(self):
        self.rejected: str | None = None
        return super().begin_game()

    def handle_error(self, error: Exception) -> None:
        self.game.errors.append(error)  # counted by the caller; python-chess would log each one

    def end_headers(self):
        self.rejected = self.game_filter.reject(self.game.headers)
        return chess.pgn.SKIP if self.rejected else None

    def result(self):
        game = super().result()
        game.rejected = self.rejected
        return game


class LineReader:
    """Text lines of a binary stream for python-chess, counting the bytes consumed so a reader can resume.

    A line longer than `limit` bytes is dropped (counted in `long_lines`); bytes that are not UTF-8
    become U+FFFD (counted in `bad_utf8`)."""

    def __init__(self, fh: IO[bytes], start: int = 0, limit: int = 1 << 20) -> None:
        self.fh = fh
        self.pos = start
        self.limit = limit
        self.long_lines = 0
        self.bad_utf8 = 0

    def readline(self) -> str:
        while True:
            raw = self.fh.readline(self.limit)
            self.pos += len(raw)
            if len(raw) == self.limit and not raw.endswith(b"\n"):
                while True:  # drop the rest of the over-long line
                    rest = self.fh.readline(self.limit)
                    self.pos += len(rest)
                    if not rest or rest.endswith(b"\n"):
                        break
                self.long_lines += 1
                continue
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_utf8 += 1
                return raw.decode("utf-8", "replace")


def iter_games(lines: LineReader, game_filter: GameFilter, headers: bool = True,
               comments: bool = True) -> Iterator[tuple[str | None, str, int]]:
    """(document or None, reason when None, byte position after the game) for each game of the stream."""

    class Builder(_Filtering):
        pass

    Builder.game_filter = game_filter
    while True:
        game = chess.pgn.read_game(lines, Visitor=Builder)
        if game is None:
            return
        if game.rejected:
            yield None, game.rejected, lines.pos
            continue
        if game.errors:
            yield None, "illegal or unreadable moves", lines.pos
            continue
        if game.next() is None:
            yield None, "no moves", lines.pos
            continue
        exporter = chess.pgn.StringExporter(columns=None, headers=headers, variations=True, comments=comments)
        yield game.accept(exporter).strip(), "", lines.pos
