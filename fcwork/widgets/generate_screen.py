"""Try a run's model from the workbench: type a prompt, watch the continuation stream in.

Generation runs in a `fcwork generate` child (torch stays out of the app); its stdout is read as
it comes and appended to the log, its last stderr line (tokens/s, why it stopped, or the error)
becomes the status, right under the prompt so that it shows at any height (the log takes what is
left). Escape closes the screen and stops a generation still running.
"""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Log, Static

from engine.jobs.procs import child_env

MAX_NEW_TOKENS = 200


def generate_command(workspace: Path, run_id: str, prompt: str, chat: bool) -> list[str]:
    """The `fcwork generate` child's argv; the prompt goes after `--`, so a prompt such as `--help`
    or `-n 5` is text to continue, not an option."""
    return [sys.executable, "-m", "fcwork.cli", "--workspace", str(workspace), "generate", run_id,
            "-n", str(MAX_NEW_TOKENS), *(["--chat"] if chat else []), "--", prompt]


class GenerateScreen(ModalScreen[None]):
    """A prompt, the streamed continuation from `run_id`'s latest checkpoint, and a status line."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+t", "toggle_chat", "Chat on/off"),
    ]

    def __init__(self, workspace: Path, run_id: str) -> None:
        super().__init__()
        self.workspace = workspace
        self.run_id = run_id
        self.chat = False
        self.proc: subprocess.Popen | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="generate-dialog"):
            yield Static(f"Try {self.run_id} (latest checkpoint)", markup=False, classes="dialog-title")
            yield Input(placeholder="a prompt; enter generates", id="gen-prompt")
            yield Static("type a prompt, then enter", markup=False, id="gen-status")
            yield Static(self._mode_text(), markup=False, id="gen-mode", classes="dialog-hint")
            yield Log(id="gen-output", highlight=False)
        yield Footer()

    def _mode_text(self) -> str:
        if self.chat:
            return "chat: the prompt is a user turn, the model answers as the assistant (ctrl+t: plain text)"
        return f"plain text: the model continues the prompt, up to {MAX_NEW_TOKENS} tokens (ctrl+t: chat)"

    def action_toggle_chat(self) -> None:
        self.chat = not self.chat
        self.query_one("#gen-mode", Static).update(self._mode_text())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        prompt = event.value
        if not prompt.strip():
            self._status("type a prompt first")
            return
        if self.proc is not None and self.proc.poll() is None:
            self._status("still generating: wait, or escape to stop it")
            return
        log = self.query_one("#gen-output", Log)
        log.clear()
        log.write(f"you: {prompt}\nmodel: " if self.chat else prompt)
        self._status("loading the checkpoint...")
        self._generate(prompt, self.chat)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, prompt: str, chat: bool) -> None:
        proc = subprocess.Popen(generate_command(self.workspace, self.run_id, prompt, chat), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**child_env(), "COLUMNS": "200"})
        self.proc = proc
        if not self.is_attached:
            proc.terminate()  # closed before the child started
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        assert proc.stdout is not None and proc.stderr is not None
        first = True
        while chunk := os.read(proc.stdout.fileno(), 4096):
            text = decoder.decode(chunk)
            if text:
                self.app.call_from_thread(self._append, text, first)
                first = False
        err = proc.stderr.read().decode("utf-8", errors="replace")
        code = proc.wait()
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]  # the last says how it went
        last = lines[-1] if lines else "done" if code == 0 else f"fcwork generate exited with {code}"
        self.app.call_from_thread(self._status, "stopped" if code < 0 else last)

    def _append(self, text: str, first: bool) -> None:
        if not self.is_attached:
            return  # closed while the child was still writing
        if first:
            self._status("generating...")
        self.query_one("#gen-output", Log).write(text)

    def _status(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#gen-status", Static).update(text)

    def action_close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self.dismiss(None)
