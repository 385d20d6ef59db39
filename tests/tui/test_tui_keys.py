"""Keys and focus as in lazygit, k9s, htop and harlequin: `?` lists every key, `q` quits after the
same question as ctrl+q, focus shows at a glance and tab never stops on the tab bar, a weight
field takes a new value on the first key, an invalid weight shows on the bars; the README's key
table is the `?` overlay's."""

from __future__ import annotations

import re

import pytest
from textual.color import Color
from textual.widgets import DataTable, Input, Tabs

from fcwork import keys
from fcwork.widgets.help_screen import HelpScreen
from fcwork.widgets.modals import ConfirmScreen
from tui_fixtures import REPO_ROOT, make_app, make_workspace, settle, show_pane, shown, wait_for

pytestmark = pytest.mark.anyio

PANE_KEYS = {"manifest": "f1", "tokenizer": "f2", "queue": "f3", "metrics": "f4", "eval": "f5"}


@pytest.mark.parametrize("pane", PANE_KEYS)
async def test_question_mark_lists_every_key_of_the_pane_and_the_global_ones(tmp_path, pane):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, PANE_KEYS[pane])
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        (title, rows), (everywhere, global_rows) = app.screen.sections
        cls = type(app.panes[pane])
        assert rows == keys.pane_keys(cls) and list(global_rows) == list(keys.GLOBAL_KEYS)
        for binding in cls.BINDINGS:  # every binding of the pane, under each of its keys
            assert any(set(binding.key.split(",")) == set(k.split(" / ")) for k, _ in rows), binding
        for k, what in rows[:2]:  # on screen (the overlay scrolls for the rest)
            assert shown(app, k) and shown(app, what.split(" (")[0][:30]), (k, what)
        await pilot.press("end")  # scrolls (animated) to the last of the global keys
        k, what = global_rows[-1]
        await wait_for(pilot, lambda: shown(app, k) and shown(app, what), what=f"{k}: {what}")
        await pilot.press("question_mark")  # ? again (or escape, or q) closes it
        assert not isinstance(app.screen, HelpScreen)


async def test_q_asks_as_ctrl_q_does_and_the_footer_shows_it(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f3")
        assert any(line.rstrip().endswith("q Quit") for line in _lines(app)[-1:]), _lines(app)[-1]
        questions = []
        for key in ("q", "ctrl+q"):
            await pilot.press(key)
            assert isinstance(app.screen, ConfirmScreen)
            questions.append(app.screen.question)
            await pilot.press("n")
            assert not isinstance(app.screen, ConfirmScreen) and app.is_running
        assert questions[0] == questions[1] and questions[0].startswith("Quit fcwork?")
        assert "keep training" in questions[0]
        await pilot.press("q", "y")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")


async def test_ctrl_c_says_how_to_quit_without_markup(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await show_pane(pilot, app, "f3")
        await pilot.press("ctrl+c")
        await pilot.pause()
        said = [n for n in app._notifications if "quit" in n.message]
        assert said and "[b]" not in said[-1].message and "q or ctrl+q" in said[-1].message


async def test_tab_moves_between_widgets_never_to_the_tab_bar_and_focus_shows(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        seen = []
        for _ in range(8):
            await pilot.press("tab")
            seen.append(app.focused)
            assert not isinstance(app.focused, Tabs)
        assert any(isinstance(w, Input) for w in seen) and any(isinstance(w, DataTable) for w in seen)
        # The focused widget has a bar in the accent colour on its left; the others a blank one.
        table = app.query_one("#sources", DataTable)
        table.focus()
        await pilot.pause()
        assert table.styles.border_left[0] == "outer"
        assert table.styles.border_left[1] == Color.parse(app.get_css_variables()["accent"])
        app.query_one("#mix-0", Input).focus()
        await pilot.pause()
        assert table.styles.border_left[0] in ("blank", "")
        row = app.query_one("#mix-0", Input).parent
        assert row.query_one(".mix-domain").styles.background != table.styles.background


async def test_a_weight_field_takes_a_new_value_on_the_first_key(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        inp = app.query_one("#mix-2", Input)  # chess, 0.1
        while app.focused is not inp:
            await pilot.press("tab")
        await pilot.press("5")
        assert inp.value == "5"  # replaced, not "0.15"
        await pilot.press("tab")
        await pilot.press("0", ".", "2")
        assert app.query_one("#mix-3", Input).value == "0.2"


async def test_an_invalid_weight_shows_on_the_bars(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        inp = app.query_one("#mix-1", Input)  # code
        inp.focus()
        await pilot.press(".")  # replaces 0.3 with "." : not a number
        await pilot.pause()
        bars = [app.query_one(f"#bar-{i}") for i in range(5)]
        assert bars[1].note == "invalid weight (see below)"
        assert all(b.note == "(mix invalid)" for i, b in enumerate(bars) if i != 1)
        assert shown(app, "invalid weight (see below)") and shown(app, "(mix invalid)")
        assert shown(app, 'mix.code: expected a non-negative number, got "."')
        await pilot.press("backspace", "1")
        await pilot.pause()
        assert all(b.note == "" for b in bars) and bars[1].value == pytest.approx(1 / 1.7)
        for i in range(5):
            app.query_one(f"#mix-{i}", Input).value = "0"
        await pilot.pause()
        assert all(b.note == "invalid: every weight is 0" for b in bars)


def test_the_readme_key_table_is_the_help_overlay():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- keys: python -m fcwork.keys -->\n(.*?)<!-- /keys -->", readme, re.S)
    assert found, "README.md: no key table between <!-- keys: python -m fcwork.keys --> and <!-- /keys -->"
    assert found.group(1) == keys.markdown(), "README's key table differs: paste `python -m fcwork.keys` into it"


def _lines(app) -> list[str]:
    from tui_fixtures import screen_lines

    return screen_lines(app)
