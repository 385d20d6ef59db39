"""Built-in sources of the default profile: determinism, clean text, legal chess, right numbers, chat roles."""

from __future__ import annotations

import ast
import contextlib
import csv
import hashlib
import io
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import chess
import chess.pgn
import pytest

from engine.data.builtin import BUILTIN_SOURCES, iter_builtin
from engine.data.builtin.chat import conversation
from engine.data.builtin.chess_games import Engine, Player, play_game
from engine.data.builtin.data_notebooks import build_notebook
from engine.data.builtin.openings import OPENINGS
from engine.data.builtin.science_prose import TEMPLATES
from engine.data.builtin.stdlib_code import generate as stdlib_generate, stdlib_files
from engine.errors import DataError
from engine.profile import SPECIAL_SYMBOLS, SourceConfig
from engine.data.sources import SourceStats, iter_source

REPO = Path(__file__).resolve().parent.parent
NAMES = ["python-stdlib", "science-docs", "chess-games", "chess-positions", "data-notebooks", "chat", "chat-tasks"]
BUDGET = {"python-stdlib": 150_000, "science-docs": 40_000, "chess-games": 15_000, "chess-positions": 10_000,
          "data-notebooks": 20_000, "chat": 15_000, "chat-tasks": 10_000}


def take(name: str, seed: int, budget: int | None = None) -> list[str]:
    return list(iter_builtin(name, seed, budget or BUDGET[name]))


def test_registry_names_the_seven_sources_of_the_default_profile():
    assert sorted(BUILTIN_SOURCES) == sorted(NAMES)
    default = (REPO / "profiles" / "default.toml").read_text()
    for name in NAMES:
        assert f'format = "builtin:{name}"' in default


def test_registry_imports_no_generator_module_until_used():
    code = ("import sys, engine.data.builtin; "
            "print(sorted(m for m in ('chess', 'numpy', 'torch', 'textual', 'engine.data.builtin.chess_games') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_name_is_a_one_line_data_error():
    with pytest.raises(DataError) as err:
        iter_builtin("nope", 1, 100)
    msg = str(err.value)
    assert msg.startswith("builtin:nope: unknown built-in source (known: python-stdlib, science-docs,")
    assert "\n" not in msg


@pytest.mark.parametrize("name", NAMES)
def test_docs_are_clean_text_up_to_the_budget(name):
    docs = take(name, 7)
    budget = BUDGET[name]
    total = sum(len(d) for d in docs)
    assert docs and total >= budget
    assert total - len(docs[-1]) < budget  # stops as soon as the budget is reached
    for doc in docs:
        assert isinstance(doc, str) and doc.strip()
        assert "\x00" not in doc
        doc.encode("utf-8")  # no lone surrogates
    assert len(set(docs)) == len(docs) or name == "python-stdlib"  # generated docs do not repeat


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_docs_other_seed_other_docs(name):
    budget = BUDGET[name] // 2
    first = take(name, 11, budget)
    assert take(name, 11, budget) == first
    assert take(name, 12, budget) != first


def test_science_docs_are_the_same_in_a_fresh_process():
    """Module imports and attribute walks must not depend on what the process imported before."""
    code = ("import hashlib, sys; from engine.data.builtin import iter_builtin; "
            "h = hashlib.sha256(); [h.update(d.encode()) for d in iter_builtin('science-docs', 5, 60000)]; "
            "print(h.hexdigest())")
    fresh = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                           timeout=120)
    h = hashlib.sha256()
    for d in iter_builtin("science-docs", 5, 60000):
        h.update(d.encode())
    assert fresh.stdout.strip() == h.hexdigest()


def test_builtin_source_through_the_manifest_reader():
    src = SourceConfig(name="c", domain="chat", format="builtin:chat")
    stats = SourceStats()
    docs = list(iter_source(src, stats, seed=3, max_chars=5000))
    assert docs and stats.docs == len(docs) and stats.chars >= 5000 and not stats.problems


# --- python-stdlib -------------------------------------------------------------------------------


def test_stdlib_library_files_come_first_and_are_python():
    lib, tests = stdlib_files()
    assert len(lib) > 300
    assert not any("site-packages" in str(p) or "__pycache__" in str(p) for p in lib + tests)
    docs = take("python-stdlib", 3, 300_000)
    for doc in docs[:15]:
        compile(doc, "<stdlib>", "exec", dont_inherit=True)


def test_stdlib_skips_bad_files_and_non_stdlib_folders(tmp_path):
    root = tmp_path / "lib"
    (root / "json").mkdir(parents=True)
    (root / "json" / "__init__.py").write_text("x = 1\n")
    (root / "json" / "tests").mkdir()
    (root / "json" / "tests" / "test_x.py").write_text("def test(): pass\n")
    (root / "site-packages" / "pkg").mkdir(parents=True)
    (root / "site-packages" / "pkg" / "mod.py").write_text("y = 2\n")
    (root / "csv.py").write_bytes(b"caf\xe9 = 1\n")  # latin-1, not UTF-8
    (root / "ast.py").write_text("a = 'x'\x00\n")
    (root / "abc.py").write_text("z = 1\n" + "#" * 250_000)
    (root / "not_a_stdlib_module.py").write_text("w = 3\n")
    (root / "os.py").write_text("import sys\n")
    docs = list(stdlib_generate(0, root))
    assert sorted(docs[:2]) == ["import sys\n", "x = 1\n"]  # library files first
    assert docs[2:] == ["def test(): pass\n"]  # then the test suite


# --- science-docs --------------------------------------------------------------------------------


def test_science_docs_mix_package_docstrings_and_worked_problems():
    docs = take("science-docs", 1, 120_000)
    heads = [d.split("\n", 1)[0] for d in docs]
    assert any(h.startswith(("numpy.", "Module numpy")) for h in heads)
    assert any(h in {t(random.Random(0)).title for t in TEMPLATES} or "decay of" in h or "Taylor" in h for h in heads)
    assert all(len(d) >= 200 for d in docs)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.__name__)
def test_worked_problems_run_for_many_seeds(template):
    for seed in range(60):
        w = template(random.Random(seed))
        text = w.as_text()
        assert w.problem and w.solution and "nan" not in text.split() and "inf" not in text.split()


def test_worked_problem_numbers_check_out():
    from engine.data.builtin.science_prose import elastic_collision, euclid

    for seed in range(20):
        text = euclid(random.Random(seed)).solution
        a, u, b, v, g = map(int, re.search(r"(\d+) \* (-?\d+) \+ (\d+) \* (-?\d+) = (\d+)\.$", text).groups())
        assert a * u + b * v == g == math.gcd(a, b)
        text = elastic_collision(random.Random(seed)).solution
        before, after = re.search(r"momentum: before (\S+) kg m/s, after (\S+) kg m/s", text).groups()
        assert math.isclose(float(before), float(after), abs_tol=1e-3)


# --- chess-games ---------------------------------------------------------------------------------


def movetext_sans(pgn: str) -> list[str]:
    body = pgn.split("\n\n", 1)[1]
    body = re.sub(r"\{[^}]*\}", " ", body)
    return [t for t in body.split() if not re.fullmatch(r"\d+\.|1-0|0-1|1/2-1/2|\*", t)]


def test_openings_are_legal_lines_with_eco_codes():
    for op in OPENINGS:
        board = chess.Board()
        for san in op.san.split():
            board.push_san(san)
        assert re.fullmatch(r"[A-E]\d\d", op.eco) and op.name


def test_chess_games_parse_back_with_legal_moves_and_consistent_results():
    docs = take("chess-games", 2, 25_000)
    assert len(docs) >= 20
    endings = set()
    for pgn in docs:
        game = chess.pgn.read_game(io.StringIO(pgn))
        assert game is not None and not game.errors
        h = game.headers
        for tag in ("Event", "Date", "White", "Black", "Result", "ECO", "Opening"):
            assert h.get(tag) and h[tag] != "?"
        board = game.board()
        sans = []
        for move in game.mainline_moves():
            assert move in board.legal_moves
            sans.append(board.san(move))
            board.push(move)
        assert sans == movetext_sans(pgn)  # our SAN writer agrees with python-chess, suffixes included
        assert int(h["PlyCount"]) == len(sans)
        result = h["Result"]
        if board.is_checkmate():
            endings.add("mate")
            assert result == ("0-1" if board.turn == chess.WHITE else "1-0")
        elif board.is_stalemate():
            endings.add("stalemate")
            assert result == "1/2-1/2"
        elif board.is_insufficient_material() or board.halfmove_clock >= 150 or board.is_repetition(3):
            endings.add("draw rule")
            assert result == "1/2-1/2"
        elif h["Termination"] == "adjudication":
            endings.add("adjudication")
        elif "Draw agreed." in " ".join(pgn.split()):
            endings.add("agreement")
            assert result == "1/2-1/2"
        else:
            endings.add("resignation")
            loser = "White" if result == "0-1" else "Black"
            assert result in ("1-0", "0-1") and f"{loser} resigns." in " ".join(pgn.split())
        opening_board = chess.Board()
        for san in next(o for o in OPENINGS if o.name == h["Opening"]).san.split():
            assert sans[len(opening_board.move_stack)] == opening_board.san(opening_board.parse_san(san))
            opening_board.push_san(san)
    assert "mate" in endings


def test_chess_positions_are_the_boards_their_moves_lead_to():
    docs = take("chess-positions", 3)
    assert len(docs) >= 10
    for doc in docs:
        head, *blocks = doc.split("\n\n")
        name = head.removeprefix("Positions from ").rsplit(" (", 1)[0]
        assert any(o.name == name for o in OPENINGS), head
        board = chess.Board()
        for block in blocks:
            moves, fen, about = block.strip().split("\n")
            for tok in moves.split():
                if not re.fullmatch(r"\d+\.(\.\.)?", tok):
                    assert tok == board.san(board.parse_san(tok))  # legal, written as python-chess writes it
                    board.push_san(tok)
            assert fen == f"FEN: {board.board_fen()}"
            assert about.startswith(("White to move", "Black to move")[not board.turn])


def test_engine_finds_mate_in_one_and_avoids_stalemating():
    engine = Engine(use_stockfish=False)
    board = chess.Board("6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1")  # Ra8# is mate
    legal = list(board.legal_moves)
    for seed in range(5):  # a player without noise always looks at every check
        assert engine.choose(board, legal, Player("p", 0.0), 40, random.Random(seed), 1) == chess.Move.from_uci("a1a8")
    board = chess.Board("k7/8/1Q6/8/8/8/8/6K1 w - - 0 1")  # Qb6-c7?? would not stalemate, Qc6/Qb5... some do
    for seed in range(10):
        move = engine.choose(board, list(board.legal_moves), Player("p", 10.0), 60, random.Random(seed), 1)
        board.push(move)
        assert not board.is_stalemate()
        board.pop()


def test_games_end_by_the_rules_when_played_out():
    engine = Engine(use_stockfish=False)
    rng = random.Random(9)
    for _ in range(5):
        rec = play_game(engine, OPENINGS[0], Player("a", 30.0), Player("b", 30.0), rng, 1, 40)
        assert rec.result in ("1-0", "0-1", "1/2-1/2") and rec.sans


FAKE_UCI = """#!{python}
import sys
import chess

board = chess.Board()
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "uci":
        print("id name FakeFish")
        print("option name Threads type spin default 1 min 1 max 64")
        print("option name Hash type spin default 16 min 1 max 1024")
        print("uciok", flush=True)
    elif cmd[0] == "isready":
        print("readyok", flush=True)
    elif cmd[0] == "position":
        board = chess.Board() if cmd[1] == "startpos" else chess.Board(" ".join(cmd[2:8]))
        if "moves" in cmd:
            for uci in cmd[cmd.index("moves") + 1:]:
                board.push_uci(uci)
    elif cmd[0] == "go":
        moves = sorted(board.legal_moves, key=lambda m: (not board.is_capture(m), m.uci()))
        print("bestmove " + moves[0].uci(), flush=True)
    elif cmd[0] == "quit":
        break
"""


def test_a_stockfish_on_path_plays_some_games(tmp_path, monkeypatch):
    """Any UCI binary named stockfish is used for some players (a tiny stand-in engine here)."""
    fake = tmp_path / "stockfish"
    fake.write_text(FAKE_UCI.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    docs = take("chess-games", 4, 5_000)
    assert any("Stockfish (nodes=" in d for d in docs)
    for pgn in docs:
        game = chess.pgn.read_game(io.StringIO(pgn))
        assert game is not None and not game.errors
    assert take("chess-games", 4, 5_000) == docs  # still deterministic


@pytest.mark.skipif(shutil.which("stockfish") is None, reason="no stockfish on PATH")
def test_stockfish_players_when_available():
    docs = take("chess-games", 4, 20_000)
    assert any("Stockfish" in d for d in docs)
    for pgn in docs:
        assert not chess.pgn.read_game(io.StringIO(pgn)).errors


# --- data-notebooks ------------------------------------------------------------------------------


def notebook_cells(doc: str) -> list[tuple[str, str, str]]:
    """(heading, code, output) per cell; the load cell's heading is ''."""
    cells = []
    for m in re.finditer(r"(?:## (.*?)\n[\s\S]*?)?```python\n([\s\S]*?)\n```\n```text\n([\s\S]*?)\n```", doc):
        cells.append((m.group(1) or "", m.group(2), m.group(3)))
    return cells


def table_rows(load_code: str) -> list[dict]:
    """The table parsed straight from the document, independently of the notebook's own code."""
    m = re.search(r'raw = """([\s\S]*?)"""', load_code)
    if m:
        rows = list(csv.DictReader(io.StringIO(m.group(1))))
        return [{k: _num(v) for k, v in r.items()} for r in rows]
    data = ast.literal_eval(re.search(r"data = (\[[\s\S]*?\n\])", load_code).group(1))
    cols = ast.literal_eval(re.search(r"columns = (\[.*\])", load_code).group(1))
    return [dict(zip(cols, values)) for values in data]


def _num(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_notebook_outputs_are_what_the_code_prints():
    for seed in range(25):
        doc = build_notebook(random.Random(seed))
        ns: dict = {}
        cells = notebook_cells(doc)
        assert len(cells) >= 4
        for _, code, out in cells:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(code, ns)
            assert buf.getvalue().rstrip("\n") == out


def test_notebook_numbers_match_an_independent_recount():
    checked = {"total": 0, "group": 0, "summary": 0, "count": 0}
    for seed in range(80):
        doc = build_notebook(random.Random(seed))
        cells = notebook_cells(doc)
        rows = table_rows(cells[0][1])
        assert f"```text\n{len(rows)} rows\n```" in doc
        for heading, _, out in cells[1:]:
            if any(f"`{name}`" in heading and name not in rows[0] for name in re.findall(r"`(\w+)`", heading)):
                continue  # a derived column the notebook added; its cell is checked by re-execution
            if m := re.fullmatch(r"Total `(\w+)`", heading):
                assert math.isclose(float(out), sum(r[m.group(1)] for r in rows), abs_tol=0.006)
                checked["total"] += 1
            elif m := re.fullmatch(r"`(\w+)` by `(\w+)`", heading):
                col, g = m.groups()
                sums: dict = {}
                for r in rows:
                    sums[r[g]] = sums.get(r[g], 0) + r[col]
                got = dict(line.rsplit(" ", 1) for line in out.splitlines())
                assert sorted(got) == sorted(map(str, sums))
                for key, value in sums.items():
                    assert math.isclose(float(got[str(key)]), value, abs_tol=0.006)
                top = max(sorted(sums, key=str), key=lambda k: sums[k])
                assert re.search(rf"{re.escape(str(top))} leads with {re.escape(got[str(top)])}\b", doc)
                checked["group"] += 1
            elif m := re.fullmatch(r"Summary of `(\w+)`", heading):
                vals = [r[m.group(1)] for r in rows]
                mean = float(re.search(r"^mean: (\S+)$", out, re.M).group(1))
                assert math.isclose(mean, statistics.mean(vals), abs_tol=0.006)
                assert f"The mean `{m.group(1)}` is {round(statistics.mean(vals), 2)}" in doc
                checked["summary"] += 1
            elif m := re.fullmatch(r"Rows with `(\w+)` above (\S+)", heading):
                n = sum(1 for r in rows if r[m.group(1)] > float(m.group(2)))
                assert out.startswith(f"{n} of {len(rows)} rows")
                checked["count"] += 1
    assert all(checked.values()), checked


# --- chat ----------------------------------------------------------------------------------------


def test_chat_docs_use_the_role_symbols_in_order():
    system, user, assistant, end = SPECIAL_SYMBOLS[:4]
    for doc in take("chat", 5, 30_000):
        turns = re.findall(r"(<\|\w+\|>)\n([\s\S]*?)\n(<\|end\|>)", doc)
        assert turns and "".join(f"{r}\n{t}\n{e}\n" for r, t, e in turns) == doc
        roles = [r for r, _, _ in turns if r != system]
        assert roles[0] == user and roles == [user, assistant] * (len(roles) // 2)
        assert all(r in (system, user, assistant) for r, _, _ in turns) and end in doc


def test_chat_stdlib_examples_show_real_results():
    import importlib

    seen = 0
    for seed in range(150):
        doc = conversation(random.Random(seed))
        for expr, result in re.findall(r"(?:>>> import \w+\n)+>>> (.*)\n(.*)", doc):
            ns = {m: importlib.import_module(m) for m in ("math", "statistics", "bisect", "heapq", "itertools",
                                                         "textwrap", "os", "string", "collections", "fractions",
                                                         "calendar", "zlib", "difflib", "shlex", "functools",
                                                         "operator", "json")}
            assert repr(eval(expr, ns)) == result
            seen += 1
    assert seen >= 5
