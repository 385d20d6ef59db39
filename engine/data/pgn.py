"""PGN files as documents, one game each, read with python-chess's reader.

python-chess's `read_game` splits the stream into games and reads their tag pairs (with its
HeadersBuilder, which skips the movetext without parsing it), so games are filtered on rating,
time control and result at thousands a second. A kept game is its own text from the file: tag
pairs kept or dropped, `{comments}` (Lichess's `[%clk]`, `[%eval]`) kept or dropped. Parsing
every move (python-chess's GameBuilder, about 100 games a second) happens only with
`validate_moves`: then games with illegal moves are skipped and the moves are written by
python-chess's exporter on one line. A game without moves is always skipped.
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
    return next((name for name, limit in CLASS_LIMITS if estimate <= limit), "classical")


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
        self.lines: list[str] = []  # every line handed out since the caller last cleared it

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
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_utf8 += 1
                line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            return line


_COMMENT_RE = re.compile(r"\{[^}]*\}|;[^\n]*")
_SPACES_RE = re.compile(r"[ \t]{2,}")
_MOVE_RE = re.compile(r"[a-hNBRQKO][a-h1-8x=+#-]|O-O")


def _raw_game(lines: list[str], headers: bool, comments: bool) -> str | None:
    """A game's own text: tag pairs (if kept), a blank line, the movetext lines; None without moves."""
    tags, moves = [], []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("%"):
            continue
        if text.startswith("[") and not moves:
            tags.append(text)
        else:
            moves.append(text)
    movetext = "\n".join(moves)
    if not comments:
        movetext = _SPACES_RE.sub(" ", _COMMENT_RE.sub("", movetext)).replace(" \n", "\n").strip()
    if not _MOVE_RE.search(_COMMENT_RE.sub("", movetext)):
        return None
    return "\n".join(tags) + "\n\n" + movetext if headers and tags else movetext


def iter_games(lines: LineReader, game_filter: GameFilter, headers: bool = True, comments: bool = True,
               validate_moves: bool = False) -> Iterator[tuple[str | None, str, int]]:
    """(document or None, reason when None, byte position after the game) for each game of the stream."""
    if validate_moves:
        yield from _validated_games(lines, game_filter, headers, comments)
        return
    while True:
        lines.lines = []
        tags = chess.pgn.read_game(lines, Visitor=chess.pgn.HeadersBuilder)
        if tags is None:
            return
        reason = game_filter.reject(tags)
        if reason:
            yield None, reason, lines.pos
            continue
        doc = _raw_game(lines.lines, headers, comments)
        if doc is None:
            yield None, "no moves", lines.pos
            continue
        yield doc, "", lines.pos


def _validated_games(lines: LineReader, game_filter: GameFilter, headers: bool,
                     comments: bool) -> Iterator[tuple[str | None, str, int]]:
    class Builder(_Filtering):
        pass

    Builder.game_filter = game_filter
    while True:
        lines.lines = []
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
