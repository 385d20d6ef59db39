"""Built-in corpus sources of the embedded default profile, named by `format = "builtin:NAME"`.

Every source is made from what any machine with the project installed has (the stdlib's
sources, installed packages' docstrings, python-chess), so a corpus builds offline. Output
is deterministic for a seed. Each source module is imported only when it is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Iterator

from engine.errors import DataError


@dataclass(frozen=True)
class BuiltinSource:
    """A built-in source: its name, the domain it is made for, and the module that generates it."""

    name: str
    domain: str
    description: str
    module: str  # engine.data.builtin.<module> has generate(seed) -> Iterator[str]

    def generate(self, seed: int) -> Iterator[str]:
        """The source's documents for `seed`, without a budget (some sources never end)."""
        return importlib.import_module(f"engine.data.builtin.{self.module}").generate(seed)


BUILTIN_SOURCES: dict[str, BuiltinSource] = {
    s.name: s
    for s in (
        BuiltinSource("python-stdlib", "code", "the Python standard library's .py files", "stdlib_code"),
        BuiltinSource("science-docs", "science", "docstrings of numpy and other installed scientific packages, "
                      "plus worked problems with computed numbers", "science_docs"),
        BuiltinSource("chess-games", "chess", "PGN games played from real openings by a small built-in engine",
                      "chess_games"),
        BuiltinSource("chess-positions", "chess", "positions along games from real openings and random moves, "
                      "as FEN after the moves that led there", "chess_positions"),
        BuiltinSource("data-notebooks", "data", "notebook-style analyses of small tables with computed results",
                      "data_notebooks"),
        BuiltinSource("chat", "chat", "synthesised user/assistant exchanges about the other domains", "chat"),
        BuiltinSource("chat-tasks", "tasks", "short questions with one checkable answer (a legal chess move, what a "
                      "snippet prints, a table's value): chat SFT data", "chat_tasks"),
    )
}


@dataclass(frozen=True)
class BuiltinImageSource:
    """A built-in source of image-text pairs (engine.data.imagesources.ImageSample) with known ground truth."""

    name: str
    domain: str
    description: str
    module: str  # engine.data.builtin.<module> has generate(seed, count) -> Iterator[ImageSample]

    def generate(self, seed: int, count: int = 600) -> Iterator:
        """`count` samples for `seed` (deterministic: the first n of a larger count are the same)."""
        return importlib.import_module(f"engine.data.builtin.{self.module}").generate(seed, count)


IMAGE_SOURCES: dict[str, BuiltinImageSource] = {
    s.name: s
    for s in (
        BuiltinImageSource("chess-diagrams", "caption", "chess board diagrams drawn from opening lines plus random "
                           "moves, captioned with their FEN and a sentence", "chess_diagrams"),
        BuiltinImageSource("charts", "caption", "bar and line charts of small generated tables, captioned with "
                           "their values", "charts"),
    )
}


def builtin_source(name: str) -> BuiltinSource:
    """The built-in text source `name`; a one-line DataError naming the known ones otherwise."""
    source = BUILTIN_SOURCES.get(name)
    if source is None:
        raise DataError(f"builtin:{name}: unknown built-in source (known: {', '.join(BUILTIN_SOURCES)})")
    return source


def iter_builtin(name: str, seed: int, max_chars: int) -> Iterator[str]:
    """Yield documents (plain text) of built-in source `name`, deterministically for `seed`, until about
    max_chars characters have been yielded (max_chars > 0 always given)."""
    return _budgeted(builtin_source(name).generate(seed), max_chars)


def _budgeted(docs: Iterator[str], max_chars: int) -> Iterator[str]:
    """Pass documents through until their total length reaches max_chars; close the generator then."""
    total = 0
    try:
        for doc in docs:
            yield doc
            total += len(doc)
            if total >= max_chars:
                return
    finally:
        docs.close()
