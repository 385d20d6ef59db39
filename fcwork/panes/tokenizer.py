"""Tokenizer pane: the profile's tokenizer (vocab, hash, tokens per character per domain), training
it with progress, and a box where typed text shows its pieces and ids as you type.

Training runs in a child process (fcwork.jobs); SentencePiece is loaded only inside a worker,
the first time text is typed, so the app starts without it. The report is read again while the
pane is shown (every REPORT_S) and whenever it is shown, so a tokenizer built elsewhere (the
Manifest's data build, `fcwork tokenizer train`) shows its new state and hash.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Input, Label, ProgressBar, Static
from textual.worker import get_current_worker

from engine.errors import TokenizerError
from fcwork.panes.base import Pane
from fcwork.widgets.colors import theme_color
from fcwork.widgets.row_table import RowTable

MAX_SHOWN_PIECES = 400
REPORT_S = 2.0


def show_piece(piece: str) -> str:
    """A piece with its invisible characters made visible (space as the SentencePiece mark)."""
    return piece.replace("\n", "\u23ce").replace("\t", "\u21e5").replace(" ", "\u2581")


class TokenizerPane(Pane):
    """The active profile's tokenizer."""

    TITLE = "Tokenizer"
    BINDINGS = [
        Binding("t", "type_text", "Type text", tooltip="put the cursor in the text box (escape leaves it)"),
        Binding("ctrl+t", "train", "Train", tooltip="train the profile's tokenizer (needs the corpus)"),
        Binding("ctrl+l", "clear_text", "Clear text", tooltip="clear the text box"),
    ]
    HELP_KEYS = (("up / down", "move in the domains table"),
                 ("escape", "in the text box: back to the table (so the pane's keys work again)"))

    class Loaded(Message):
        """The tokenizer's report was read (None: not trained yet)."""

        def __init__(self, path: str, report: Any) -> None:
            super().__init__()
            self.path, self.report = path, report

    class Progress(Message):
        def __init__(self, label: str, done: int, total: int) -> None:
            super().__init__()
            self.label, self.done, self.total = label, done, total

    class Trained(Message):
        def __init__(self, result: dict, seconds: float) -> None:
            super().__init__()
            self.result, self.seconds = result, seconds

    class Encoded(Message):
        def __init__(self, text: str, pieces: list[str], ids: list[int]) -> None:
            super().__init__()
            self.text, self.pieces, self.ids = text, pieces, ids

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.report: Any = None
        self.training = False
        self._tok: Any = None
        self._tok_key: tuple | None = None
        self._report_stamp: Any = "unread"

    def compose(self) -> ComposeResult:
        yield Label("Tokenizer", markup=False, id="tok-title", classes="pane-title")
        yield Static("", markup=False, id="tok-info")
        table = RowTable(id="tok-domains")
        table.add_columns("domain", "sample chars", "tokens/char", "chars/token")
        yield table
        yield Static("", markup=False, id="tok-progress-label")
        yield ProgressBar(id="tok-progress", show_eta=False)
        inp = Input(placeholder="type text to see its pieces and ids", id="tok-text")
        inp.cursor_blink = getattr(self.app, "cursor_blink_inputs", True)
        yield inp
        yield Static("", markup=False, id="tok-pieces")

    def on_mount(self) -> None:
        self.query_one("#tok-progress").display = False
        self.set_interval(REPORT_S, self.redraw_shown)

    def focus_main(self) -> None:
        self.query_one("#tok-domains", DataTable).focus()  # t or tab goes to the text box

    def action_type_text(self) -> None:
        self.query_one("#tok-text", Input).focus()

    def on_key(self, event) -> None:
        if event.key == "escape" and self.query_one("#tok-text", Input).has_focus:
            event.stop()
            self.focus_main()

    def redraw(self) -> None:
        if self.profile is not None and not self.training:
            self.load_report(str(self._model_path()))

    # -- the tokenizer's report ------------------------------------------------------------------

    def _model_path(self):
        return self.ws.tokenizer_path(self.profile.tokenizer_name)

    def set_profile(self, profile: Any) -> None:
        super().set_profile(profile)
        self.query_one("#tok-title", Label).update(
            f"Tokenizer {profile.tokenizer_name}: {profile.tokenizer.model_type}, "
            f"vocab {profile.tokenizer.vocab_size:,} asked")
        self.load_report(str(self._model_path()))

    @work(thread=True, exclusive=True, exit_on_error=False, group="tok-report")
    def load_report(self, path: str) -> None:
        from pathlib import Path

        from engine.data.tokenizer import read_report
        from fcwork.watch import file_stamp

        p = Path(path)
        stamp = (path, file_stamp(p), file_stamp(p.with_suffix(".json")))
        if stamp == self._report_stamp:
            return  # unchanged since the last read
        report = read_report(p.with_suffix(".json")) if p.exists() else None
        self._report_stamp = stamp
        self.post_message(self.Loaded(path, report))

    def on_tokenizer_pane_loaded(self, event: TokenizerPane.Loaded) -> None:
        if self.report is not None and event.report != self.report:
            self._tok, self._tok_key = None, None  # retrained: encode with the new one
        self.report = event.report
        info = self.query_one("#tok-info", Static)
        table = self.query_one("#tok-domains", DataTable)
        table.clear()
        r = event.report
        if r is None:
            name = self.profile.name if self.profile else "PROFILE"
            info.update(f"not trained yet: ctrl+t trains it (needs the corpus: fcwork data build {name})")
            return
        info.update(f"vocab {r.vocab_size:,}   hash {r.hash[:16]}   {r.model_type}   "
                    f"trained in {r.train_seconds:.1f} s")
        for dom, tpc in r.tokens_per_char.items():
            table.add_row(dom, f"{r.sample_chars.get(dom, 0):,}", f"{tpc:.3f}",
                          f"{1 / tpc:.2f}" if tpc else "-", key=dom)
        text = self.query_one("#tok-text", Input).value
        if text:
            self.encode(text)

    # -- training --------------------------------------------------------------------------------

    def action_train(self) -> None:
        if self.profile is None:
            self.app.notify("No profile loaded", severity="error")
            return
        if self.training:
            self.app.notify("The tokenizer is already training")
            return
        self.training = True
        bar = self.query_one("#tok-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#tok-progress-label", Static).update(f"training tokenizer of {self.profile.name}...")
        self.train(self.profile.name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="tok-train")
    def train(self, profile_name: str) -> None:
        start = time.monotonic()
        try:
            result = self.run_job("tokenizer", profile_name, lambda *line: self.post_message(self.Progress(*line)))
        finally:
            self.post_message(self.Progress("", -1, 0))
        self.post_message(self.Trained(result, time.monotonic() - start))

    def on_tokenizer_pane_progress(self, event: TokenizerPane.Progress) -> None:
        label = self.query_one("#tok-progress-label", Static)
        bar = self.query_one("#tok-progress", ProgressBar)
        if event.done < 0:  # the job ended, one way or the other
            self.training = False
            bar.display = False
            label.update("")
            return
        label.update(event.label)
        bar.update(total=event.total or None, progress=event.done)

    def on_tokenizer_pane_trained(self, event: TokenizerPane.Trained) -> None:
        vocab = event.result.get("vocab_size", "?")
        self.app.notify(f"Tokenizer trained: vocab {vocab:,} in {event.seconds:.1f} s" if isinstance(vocab, int)
                        else "Tokenizer trained")
        self._tok, self._tok_key = None, None
        self._report_stamp = "unread"
        self.load_report(str(self._model_path()))

    # -- live pieces -----------------------------------------------------------------------------

    @on(Input.Changed, "#tok-text")
    def _typed(self, event: Input.Changed) -> None:
        if event.value:
            self.encode(event.value)
        else:
            self.query_one("#tok-pieces", Static).update("")

    def action_clear_text(self) -> None:
        self.query_one("#tok-text", Input).value = ""

    @work(thread=True, exclusive=True, exit_on_error=False, group="tok-encode")
    def encode(self, text: str) -> None:
        import os

        from engine.data.tokenizer import Tokenizer

        if self.profile is None:
            return
        path = self._model_path()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise TokenizerError(f"{path}: no tokenizer yet (ctrl+t trains it)") from None
        key = (str(path), st.st_mtime_ns, st.st_size)
        if self._tok_key != key:
            self._tok, self._tok_key = Tokenizer.load(path), key
        ids = self._tok.encode(text)
        pieces = [self._tok.sp.id_to_piece(i) for i in ids]
        if not get_current_worker().is_cancelled:
            self.post_message(self.Encoded(text, pieces, ids))

    def on_tokenizer_pane_encoded(self, event: TokenizerPane.Encoded) -> None:
        if event.text != self.query_one("#tok-text", Input).value:
            return  # an older text's answer
        styles = [f"on {theme_color(self.app, 'primary-darken-2', 'blue')}",
                  f"on {theme_color(self.app, 'secondary-darken-2', 'magenta')}"]
        out = Text()
        for i, piece in enumerate(event.pieces[:MAX_SHOWN_PIECES]):
            out.append(show_piece(piece), style=styles[i % 2])
        if len(event.pieces) > MAX_SHOWN_PIECES:
            out.append(" ...")
        n, chars = len(event.ids), len(event.text)
        out.append(f"\n{n} tokens, {chars} chars, {n / chars:.3f} tokens/char\nids: ")
        out.append(" ".join(str(i) for i in event.ids[:MAX_SHOWN_PIECES]))
        self.query_one("#tok-pieces", Static).update(out)
