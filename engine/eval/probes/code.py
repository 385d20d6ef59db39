"""Code probe: complete held-out Python function heads; does `compile()` accept head + body?

An item is a function of a held-out Python file: the prompt is the file up to and including the
function's `def` line(s); the model writes the body until it dedents back to the `def` (or stops),
and the function alone, dedented, must compile. Nothing is executed.
"""

from __future__ import annotations

import ast
import random
import textwrap
from dataclasses import dataclass
from typing import Sequence

from engine.eval.probes import LanguageModel, ProbeResult, clip, complete_items, shares

NAME = "code"
DOMAIN = "code"
VERSION = 1
MAX_NEW_TOKENS = 96


@dataclass(frozen=True)
class CodeItem:
    prompt: str   # file text up to the end of the head (ends with a newline)
    head: str     # the def line(s), with their indentation
    indent: int   # columns of the def's indentation
    body: str     # the original body (for checking the checker)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def build_items(texts: Sequence[str], limit: int, seed: int) -> list[CodeItem]:
    """Up to `limit` functions whose head ends its own line, taken from the files in turn."""
    rng = random.Random(f"code:{seed}")
    per_file: list[list[CodeItem]] = []
    for text in texts:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        lines = text.splitlines(keepends=True)
        found = []
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
                continue
            first, head_end = node.lineno, node.body[0].lineno - 1  # 1-based; the head is lines first..head_end
            if head_end < first or node.end_lineno is None:
                continue  # body on the def line
            head = "".join(lines[first - 1:head_end])
            if not head.rstrip().endswith(":"):
                continue  # comments or blank lines between head and body
            prompt = "".join(lines[:head_end])
            body = "".join(lines[head_end:node.end_lineno])
            found.append(CodeItem(prompt, head, _indent(lines[first - 1]), body))
        rng.shuffle(found)
        if found:
            per_file.append(found)
    items: list[CodeItem] = []
    while len(items) < limit and any(per_file):
        for found in per_file:
            if found and len(items) < limit:
                items.append(found.pop())
    return items


def body_of(item: CodeItem, completion: str, finished: bool) -> str:
    """The completion's lines that belong to the function: up to the first non-blank line indented
    no deeper than the def; an unfinished last line is dropped unless generation ended (EOS)."""
    lines = completion.splitlines(keepends=True)
    body = []
    for line in lines:
        if line.strip() and _indent(line) <= item.indent:
            break
        body.append(line)
    else:
        if body and not body[-1].endswith("\n") and not finished:
            body.pop()
    return "".join(body)


def compiles(item: CodeItem, body: str) -> bool:
    """Whether the function (head + body), dedented, is valid Python."""
    if not body.strip():
        return False
    source = textwrap.dedent(item.head + body.rstrip("\n") + "\n")
    try:
        compile(source, "<code probe>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def check(item: CodeItem, completion: str, finished: bool = True) -> dict:
    body = body_of(item, completion, finished)
    return {"lines": len(body.splitlines()), "compiles": compiles(item, body)}


def _dedented(item: CodeItem):
    def stop(text: str) -> bool:
        # Once a complete line comes back to the def's indentation, the function is over.
        lines = text.split("\n")[:-1]
        return any(line.strip() and _indent(line) <= item.indent for line in lines)

    return stop


def run(lm: LanguageModel, texts: Sequence[str], limit: int, seed: int) -> ProbeResult:
    items = build_items(texts, limit, seed)
    verdicts, examples = complete_items(
        lm, items, [item.prompt for item in items], MAX_NEW_TOKENS, [_dedented(item) for item in items],
        lambda item, out: check(item, out.text, out.reason in ("eos", "stop")),
        lambda item, text: {"prompt": clip(item.prompt), "completion": text})
    return ProbeResult(NAME, VERSION, shares(verdicts, compile="compiles"), len(items), examples)

