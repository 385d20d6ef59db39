"""Real chess openings (ECO code, name, main line in SAN) that generated games start from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Opening:
    """One opening line: its ECO code, its usual name and the moves that define it."""

    eco: str
    name: str
    san: str  # space-separated SAN moves, without move numbers


OPENINGS: tuple[Opening, ...] = (
    Opening("C50", "Italian Game", "e4 e5 Nf3 Nc6 Bc4 Bc5"),
    Opening("C54", "Italian Game: Giuoco Piano", "e4 e5 Nf3 Nc6 Bc4 Bc5 c3 Nf6 d4 exd4 cxd4 Bb4+"),
    Opening("C55", "Italian Game: Two Knights Defense", "e4 e5 Nf3 Nc6 Bc4 Nf6"),
    Opening("C57", "Italian Game: Two Knights Defense, Fried Liver Attack", "e4 e5 Nf3 Nc6 Bc4 Nf6 Ng5 d5 exd5 Nxd5 Nxf7"),
    Opening("C60", "Ruy Lopez", "e4 e5 Nf3 Nc6 Bb5"),
    Opening("C65", "Ruy Lopez: Berlin Defense", "e4 e5 Nf3 Nc6 Bb5 Nf6 O-O Nxe4 d4 Nd6 Bxc6 dxc6 dxe5 Nf5"),
    Opening("C68", "Ruy Lopez: Exchange Variation", "e4 e5 Nf3 Nc6 Bb5 a6 Bxc6 dxc6"),
    Opening("C84", "Ruy Lopez: Closed", "e4 e5 Nf3 Nc6 Bb5 a6 Ba4 Nf6 O-O Be7"),
    Opening("C92", "Ruy Lopez: Closed, Main Line", "e4 e5 Nf3 Nc6 Bb5 a6 Ba4 Nf6 O-O Be7 Re1 b5 Bb3 d6 c3 O-O h3"),
    Opening("C42", "Petrov's Defense", "e4 e5 Nf3 Nf6 Nxe5 d6 Nf3 Nxe4"),
    Opening("C44", "Scotch Game", "e4 e5 Nf3 Nc6 d4 exd4 Nxd4"),
    Opening("C41", "Philidor Defense", "e4 e5 Nf3 d6 d4 Nf6 Nc3 Nbd7"),
    Opening("C46", "Four Knights Game", "e4 e5 Nf3 Nc6 Nc3 Nf6"),
    Opening("C30", "King's Gambit", "e4 e5 f4"),
    Opening("C33", "King's Gambit Accepted", "e4 e5 f4 exf4 Nf3 g5"),
    Opening("C23", "Bishop's Opening", "e4 e5 Bc4 Nf6 d3"),
    Opening("C25", "Vienna Game", "e4 e5 Nc3 Nf6 f4"),
    Opening("B20", "Sicilian Defense", "e4 c5"),
    Opening("B22", "Sicilian Defense: Alapin Variation", "e4 c5 c3 Nf6 e5 Nd5 d4 cxd4"),
    Opening("B23", "Sicilian Defense: Closed", "e4 c5 Nc3 Nc6 g3 g6 Bg2 Bg7 d3 d6"),
    Opening("B33", "Sicilian Defense: Sveshnikov Variation", "e4 c5 Nf3 Nc6 d4 cxd4 Nxd4 Nf6 Nc3 e5 Ndb5 d6"),
    Opening("B54", "Sicilian Defense: Modern Variations", "e4 c5 Nf3 d6 d4 cxd4 Nxd4"),
    Opening("B70", "Sicilian Defense: Dragon Variation", "e4 c5 Nf3 d6 d4 cxd4 Nxd4 Nf6 Nc3 g6"),
    Opening("B90", "Sicilian Defense: Najdorf Variation", "e4 c5 Nf3 d6 d4 cxd4 Nxd4 Nf6 Nc3 a6"),
    Opening("B40", "Sicilian Defense: French Variation", "e4 c5 Nf3 e6 d4 cxd4 Nxd4 Nf6 Nc3"),
    Opening("C00", "French Defense", "e4 e6 d4 d5"),
    Opening("C02", "French Defense: Advance Variation", "e4 e6 d4 d5 e5 c5 c3 Nc6 Nf3 Qb6"),
    Opening("C11", "French Defense: Classical Variation", "e4 e6 d4 d5 Nc3 Nf6 Bg5 Be7"),
    Opening("C15", "French Defense: Winawer Variation", "e4 e6 d4 d5 Nc3 Bb4 e5 c5 a3 Bxc3+ bxc3"),
    Opening("B10", "Caro-Kann Defense", "e4 c6 d4 d5"),
    Opening("B12", "Caro-Kann Defense: Advance Variation", "e4 c6 d4 d5 e5 Bf5 Nf3 e6 Be2"),
    Opening("B18", "Caro-Kann Defense: Classical Variation", "e4 c6 d4 d5 Nc3 dxe4 Nxe4 Bf5 Ng3 Bg6"),
    Opening("B01", "Scandinavian Defense", "e4 d5 exd5 Qxd5 Nc3 Qa5"),
    Opening("B07", "Pirc Defense", "e4 d6 d4 Nf6 Nc3 g6"),
    Opening("B06", "Modern Defense", "e4 g6 d4 Bg7 Nc3 d6"),
    Opening("B02", "Alekhine Defense", "e4 Nf6 e5 Nd5 d4 d6 Nf3"),
    Opening("D06", "Queen's Gambit", "d4 d5 c4"),
    Opening("D20", "Queen's Gambit Accepted", "d4 d5 c4 dxc4 Nf3 Nf6 e3 e6 Bxc4 c5"),
    Opening("D30", "Queen's Gambit Declined", "d4 d5 c4 e6 Nf3 Nf6"),
    Opening("D37", "Queen's Gambit Declined: Three Knights Variation", "d4 d5 c4 e6 Nc3 Nf6 Nf3 Be7 Bf4 O-O e3"),
    Opening("D10", "Slav Defense", "d4 d5 c4 c6 Nf3 Nf6 Nc3 dxc4 a4"),
    Opening("D43", "Semi-Slav Defense", "d4 d5 c4 c6 Nf3 Nf6 Nc3 e6"),
    Opening("D02", "London System", "d4 d5 Nf3 Nf6 Bf4 e6 e3 c5 c3 Nc6"),
    Opening("D00", "Blackmar-Diemer Gambit", "d4 d5 e4 dxe4 Nc3 Nf6 f3"),
    Opening("E60", "King's Indian Defense", "d4 Nf6 c4 g6 Nc3 Bg7 e4 d6"),
    Opening("E97", "King's Indian Defense: Orthodox Variation", "d4 Nf6 c4 g6 Nc3 Bg7 e4 d6 Nf3 O-O Be2 e5 O-O Nc6 d5 Ne7"),
    Opening("D85", "Grunfeld Defense: Exchange Variation", "d4 Nf6 c4 g6 Nc3 d5 cxd5 Nxd5 e4 Nxc3 bxc3 Bg7"),
    Opening("E20", "Nimzo-Indian Defense", "d4 Nf6 c4 e6 Nc3 Bb4"),
    Opening("E32", "Nimzo-Indian Defense: Classical Variation", "d4 Nf6 c4 e6 Nc3 Bb4 Qc2 O-O a3 Bxc3+ Qxc3"),
    Opening("E12", "Queen's Indian Defense", "d4 Nf6 c4 e6 Nf3 b6 g3 Bb7 Bg2 Be7"),
    Opening("E00", "Catalan Opening", "d4 Nf6 c4 e6 g3 d5 Bg2 Be7 Nf3 O-O"),
    Opening("A57", "Benko Gambit", "d4 Nf6 c4 c5 d5 b5 cxb5 a6"),
    Opening("A60", "Benoni Defense: Modern Variation", "d4 Nf6 c4 c5 d5 e6 Nc3 exd5 cxd5 d6"),
    Opening("A80", "Dutch Defense", "d4 f5 g3 Nf6 Bg2 e6 Nf3"),
    Opening("A87", "Dutch Defense: Leningrad Variation", "d4 f5 c4 Nf6 g3 g6 Bg2 Bg7 Nf3 O-O"),
    Opening("A45", "Trompowsky Attack", "d4 Nf6 Bg5 Ne4 Bf4 c5"),
    Opening("A10", "English Opening", "c4 e5 Nc3 Nf6 g3 d5 cxd5 Nxd5 Bg2"),
    Opening("A30", "English Opening: Symmetrical Variation", "c4 c5 Nc3 Nc6 g3 g6 Bg2 Bg7"),
    Opening("A04", "Reti Opening", "Nf3 d5 c4 e6 g3 Nf6 Bg2"),
    Opening("A07", "King's Indian Attack", "Nf3 d5 g3 Nf6 Bg2 c6 O-O Bg4 d3"),
    Opening("A02", "Bird's Opening", "f4 d5 Nf3 Nf6 e3 g6"),
    Opening("A01", "Nimzo-Larsen Attack", "b3 e5 Bb2 Nc6 e3 d5"),
    Opening("A00", "Polish Opening", "b4 e5 Bb2 Bxb4 Bxe5 Nf6"),
    Opening("C21", "Danish Gambit", "e4 e5 d4 exd4 c3 dxc3 Bc4 cxb2 Bxb2"),
    Opening("C51", "Italian Game: Evans Gambit", "e4 e5 Nf3 Nc6 Bc4 Bc5 b4 Bxb4 c3 Ba5"),
    Opening("B03", "Alekhine Defense: Four Pawns Attack", "e4 Nf6 e5 Nd5 d4 d6 c4 Nb6 f4"),
)
