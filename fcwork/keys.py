"""Every key of the workbench in one place: what the `?` overlay lists and the README's key table shows.

A pane's keys are its BINDINGS (the binding's tooltip is its longer help text, its description
the footer's word) and its HELP_KEYS, the keys its widgets handle that are no binding of its own
(enter in a weight field, up/down in a table). `python -m fcwork.keys` prints the README's table.
"""

from __future__ import annotations

import importlib
from typing import Any

# Keys that work in every pane.
GLOBAL_KEYS: tuple[tuple[str, str], ...] = (
    ("F1-F5 / 1-5", "show a pane: Manifest, Tokenizer, Queue, Metrics, Eval (digits outside text boxes)"),
    ("tab / shift+tab", "move the focus to the next / previous widget (a bar on its left marks it)"),
    ("ctrl+p", "command palette: every action and pane by name"),
    ("?", "this help: the keys of the pane shown and these"),
    ("q / ctrl+q", "quit, after a y/n question (stages keep training in the background)"),
    ("escape", "close a dialog, or leave a text box"),
)
# Pane id -> (title, module, class), in tab order; the app's PANES is this.
PANES = {
    "manifest": ("Manifest", "fcwork.panes.manifest", "ManifestPane"),
    "tokenizer": ("Tokenizer", "fcwork.panes.tokenizer", "TokenizerPane"),
    "queue": ("Queue", "fcwork.panes.queue", "QueuePane"),
    "metrics": ("Metrics", "fcwork.panes.metrics", "MetricsPane"),
    "eval": ("Eval", "fcwork.panes.eval", "EvalPane"),
}


def pane_class(pane_id: str) -> Any:
    _, module, name = PANES[pane_id]
    return getattr(importlib.import_module(module), name)


def key_label(keys: str) -> str:
    """A binding's keys as a person reads them: "x,delete" -> "x / delete"."""
    return " / ".join(k.strip() for k in keys.split(","))


def pane_keys(pane: Any) -> list[tuple[str, str]]:
    """(keys, what they do) of a pane class: its bindings, then the keys its widgets handle."""
    rows = [(key_label(b.key), b.tooltip or b.description) for b in pane.BINDINGS]
    return rows + list(getattr(pane, "HELP_KEYS", ()))


def markdown() -> str:
    """The key table of the README: the global keys, then each pane's."""
    out = ["| keys | where | what it does |", "| --- | --- | --- |"]
    out += [f"| `{k}` | everywhere | {what} |" for k, what in GLOBAL_KEYS]
    for pane_id, (title, _, _) in PANES.items():
        out += [f"| `{k}` | {title} | {what} |" for k, what in pane_keys(pane_class(pane_id))]
    return "\n".join(out).replace("`|`", "`\\|`") + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
