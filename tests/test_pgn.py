"""format = "pgn": one game a document through python-chess's reader, with filters on ratings,
time control and result, tag pairs kept or dropped."""

from __future__ import annotations

import chess.pgn
import io
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.pgn import time_class
from engine.data.sources import SourceStats, iter_source
from engine.profile import SourceConfig, loads_profile
from engine.errors import ProfileError

import pytest


def game(white="w", black="b", welo="2000", belo="2000", tc="180+2", result="1-0",
         moves="1. e4 e5 2. Qh5 Nc6 3. Bc4 Nf6 4. Qxf7# 1-0") -> str:
    tags = [("Event", "Rated game"), ("White", white), ("Black", black), ("Result", result),
            ("WhiteElo", welo), ("BlackElo", belo), ("TimeControl", tc)]
    return "".join(f'[{k} "{v}"]\n' for k, v in tags) + "\n" + moves + "\n\n"


def read(tmp_path, text: str, name="g.pgn", **kw):
    data = text.encode()
    if name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    (tmp_path / name).write_bytes(data)
    stats = SourceStats()
    docs = list(iter_source(SourceConfig(name="chess", domain="chess", format="pgn", path=name, **kw), stats,
                            base_dir=tmp_path))
    return docs, stats


def test_one_game_is_one_document_with_its_tags(tmp_path):
    docs, stats = read(tmp_path, game() + game(white="x", moves="1. d4 d5 1/2-1/2", result="1/2-1/2"), name="g.pgn.zst")
    assert len(docs) == 2
    assert docs[0].startswith('[Event "Rated game"]') and docs[0].endswith("4. Qxf7# 1-0")
    assert "\n\n1. e4 e5" in docs[0]  # tags, a blank line, then the moves: one document, not two
    parsed = chess.pgn.read_game(io.StringIO(docs[1]))
    assert parsed.headers["White"] == "x" and parsed.headers["Result"] == "1/2-1/2"
    assert not stats.problems and not stats.skipped


def test_filters_on_rating_time_control_and_result(tmp_path):
    text = (game(welo="2400", belo="2300")            # kept
            + game(welo="1500", belo="2300")          # white below min_elo
            + game(welo="?", belo="2300")             # no rating
            + game(tc="60+0")                         # bullet
            + game(tc="900+10")                       # rapid: kept
            + game(result="0-1", moves="1. f3 e5 2. g4 Qh4# 0-1"))  # result not wanted
    docs, stats = read(tmp_path, text, min_elo=1800, time_control=["blitz", "rapid"], results=["1-0", "1/2-1/2"])
    assert len(docs) == 2
    assert stats.skipped == {"pgn: rating below min_elo": 1, "pgn: no rating": 1, "pgn: time control": 1,
                             "pgn: result": 1}
    docs, _ = read(tmp_path, text, time_control=["60+0"])
    assert len(docs) == 1 and '"60+0"' in docs[0]


def test_headers_and_comments_dropped(tmp_path):
    moves = "1. e4 { [%clk 0:03:00] } e5 { [%eval 0.2] } 2. Nf3 1-0"
    docs, _ = read(tmp_path, game(moves=moves), headers=False, comments=False)
    assert docs == ["1. e4 e5 2. Nf3 1-0"]
    docs, _ = read(tmp_path, game(moves=moves))
    assert "[%clk 0:03:00]" in docs[0] and docs[0].startswith("[Event")


def test_illegal_moves_empty_games_and_garbage_are_skipped(tmp_path):
    text = game(moves="1. e4 e5 2. Ke2 Ke7 1-0") + game(moves="1. e4 Qxh8 1-0") + game(moves="1-0") + "%% junk\n\n"
    docs, stats = read(tmp_path, text)
    assert len(docs) == 2  # moves are not parsed unless asked: the game's own text is kept
    assert stats.skipped == {"pgn: no moves": 1}
    docs, stats = read(tmp_path, text, validate_moves=True)
    assert len(docs) == 1 and docs[0].endswith("1. e4 e5 2. Ke2 Ke7 1-0")
    assert stats.skipped == {"pgn: illegal or unreadable moves": 1, "pgn: no moves": 1}


def test_validated_games_are_rewritten_by_the_exporter(tmp_path):
    moves = "1. e4 { [%clk 0:03:00] } e5\n2. Nf3 1-0"
    docs, _ = read(tmp_path, game(moves=moves), validate_moves=True, comments=False, headers=False)
    assert docs == ["1. e4 e5 2. Nf3 1-0"]


def test_pgn_keys_are_checked_in_the_profile():
    base = '[profile]\nname = "p"\n[mix]\nchess = 1\n[[sources]]\nname = "c"\ndomain = "chess"\npath = "x"\n'
    prof = loads_profile(base + 'format = "pgn"\nmin_elo = 1800\ntime_control = ["blitz", "600+5"]\nheaders = false\n')
    assert prof.sources[0].min_elo == 1800 and prof.sources[0].headers is False
    with pytest.raises(ProfileError, match=r'^<profile>: sources\[0\].min_elo: only for format "pgn", got format "text"$'):
        loads_profile(base + 'format = "text"\nmin_elo = 1800\n')
    with pytest.raises(ProfileError, match=r'sources\[0\].time_control: expected ultrabullet, .* got "fast"$'):
        loads_profile(base + 'format = "pgn"\ntime_control = ["fast"]\n')
    with pytest.raises(ProfileError, match=r'sources\[0\].results: expected results among 1-0, 0-1, 1/2-1/2, \*, got "2-0"$'):
        loads_profile(base + 'format = "pgn"\nresults = ["2-0"]\n')


@pytest.mark.parametrize("tc, cls", [("15+0", "ultrabullet"), ("60+0", "bullet"), ("180+2", "blitz"),
                                     ("600+5", "rapid"), ("1800+20", "classical"), ("-", "correspondence"),
                                     ("?", "")])
def test_time_classes_follow_lichess(tc, cls):
    assert time_class(tc) == cls


names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\[]'), min_size=1, max_size=12)


@settings(max_examples=30, deadline=None)
@given(players=st.lists(st.tuples(names, names, st.integers(800, 2900), st.integers(800, 2900)), min_size=1, max_size=8),
       min_elo=st.sampled_from([0, 1500, 2200]))
def test_games_round_trip_through_python_chess(tmp_path_factory, players, min_elo):
    tmp = tmp_path_factory.mktemp("pgn")
    text = "".join(game(white=w.strip() or "w", black=b.strip() or "b", welo=str(we), belo=str(be))
                   for w, b, we, be in players)
    docs, stats = read(tmp, text, min_elo=min_elo)
    want = [(w, b) for w, b, we, be in players if min(we, be) >= min_elo]
    assert len(docs) == len(want)
    for doc, (w, b) in zip(docs, want):
        g = chess.pgn.read_game(io.StringIO(doc))
        assert g.headers["White"] == (w.strip() or "w") and g.headers["Black"] == (b.strip() or "b")
        assert g.end().board().is_checkmate()
