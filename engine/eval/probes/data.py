"""Data probe: questions about the small tables of held-out analysis notebooks, answers computed here.

An item is the table of a held-out data document (the notebook's load cell: CSV text or Python
tuples; else a markdown table), the prompt being the document up to the end of that cell and
its output, followed by a cell in the corpus' own style asking for a mean, a maximum or a count;
the model writes the cell's output. The first number it writes must equal
the answer computed with Python (a mean is compared at 2 decimals, as the cell rounds it).
"""

from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass
from typing import Sequence

from engine.eval.probes import LanguageModel, ProbeResult, complete_items, shares

NAME = "data"
DOMAIN = "data"
VERSION = 1
MAX_NEW_TOKENS = 12
KINDS = ("mean", "max", "count")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]
    end: int  # offset in the document just after the table

    def numeric(self) -> list[str]:
        return [c for i, c in enumerate(self.columns) if all(_is_number(r[i]) for r in self.rows)]

    def categorical(self) -> list[str]:
        out = []
        for i, c in enumerate(self.columns):
            values = [r[i] for r in self.rows]
            if not any(_is_number(v) for v in values) and len(set(values)) < len(values):
                out.append(c)
        return out

    def values(self, column: str) -> list[str]:
        i = self.columns.index(column)
        return [r[i] for r in self.rows]


@dataclass(frozen=True)
class DataItem:
    prompt: str
    kind: str
    question: str
    answer: float


def _is_number(s: str) -> bool:
    return bool(_NUMBER.fullmatch(s.strip()))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def find_table(text: str) -> Table | None:
    """The document's table: from its first Python cell (CSV text in `raw = \"\"\"...\"\"\"` or tuples in
    `data = [...]` with `columns = [...]`, as the corpus' notebooks load it), else its first markdown table."""
    return _cell_table(text) or _markdown_table(text)


_CELL = re.compile(r"```python\n(.*?)\n```\n(?:```text\n.*?\n```\n?)?", re.S)


def _cell_table(text: str) -> Table | None:
    """A table loaded by the first Python cell; `end` is just after that cell and its output."""
    import ast
    import csv
    import io

    m = _CELL.search(text)
    if not m:
        return None
    try:
        tree = ast.parse(m.group(1))
    except SyntaxError:
        return None
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    columns, rows = None, None
    if isinstance(found.get("raw"), str):
        records = list(csv.reader(io.StringIO(found["raw"].strip())))
        if len(records) >= 3:
            columns, rows = records[0], records[1:]
    elif isinstance(found.get("data"), list) and isinstance(found.get("columns"), list):
        columns = [str(c) for c in found["columns"]]
        rows = [[str(v) for v in r] for r in found["data"] if isinstance(r, tuple)]
    if not columns or not rows or any(len(r) != len(columns) for r in rows):
        return None
    return Table(columns, rows, m.end())


def _markdown_table(text: str) -> Table | None:
    """The first markdown table (header, |---| line, at least 2 rows)."""
    lines = text.splitlines(keepends=True)
    offset = 0
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+\s*", lines[i + 1]):
            columns = _cells(line)
            rows, end = [], offset + len(line) + len(lines[i + 1])
            for row_line in lines[i + 2:]:
                if not row_line.startswith("|"):
                    break
                cells = _cells(row_line)
                if len(cells) != len(columns):
                    return None
                rows.append(cells)
                end += len(row_line)
            return Table(columns, rows, end) if len(rows) >= 2 else None
        offset += len(line)
    return None


def _question(rng: random.Random, table: Table) -> tuple[str, str, str, float] | None:
    """(kind, heading + question, code, answer) for one computed question about the table."""
    numeric, categorical = table.numeric(), table.categorical()
    kinds = [k for k in KINDS if (k != "count" and numeric) or (k == "count" and categorical)]
    if not kinds:
        return None
    kind = rng.choice(kinds)
    if kind == "count":
        col = rng.choice(categorical)
        value = rng.choice(sorted(set(table.values(col))))
        answer = float(sum(v == value for v in table.values(col)))
        text = f"## Rows with `{col}` = {value}\n\nHow many rows have `{col}` = {value}?\n\n"
        code = f'print(sum(1 for r in rows if r["{col}"] == "{value}"))'
        return kind, text, code, answer
    col = rng.choice(numeric)
    values = [float(v) for v in table.values(col)]
    if kind == "mean":
        text = f"## Mean `{col}`\n\nWhat is the mean `{col}`?\n\n"
        code = f'print(round(statistics.mean(r["{col}"] for r in rows), 2))'
        return kind, text, code, round(statistics.mean(values), 2)
    text = f"## Largest `{col}`\n\nWhat is the largest `{col}`?\n\n"
    code = f'print(max(r["{col}"] for r in rows))'
    return kind, text, code, max(values)


def build_items(texts: Sequence[str], limit: int, seed: int) -> list[DataItem]:
    """One question per document that has a table, up to `limit`."""
    rng = random.Random(f"data:{seed}")
    items = []
    for text in texts:
        if len(items) >= limit:
            break
        table = find_table(text)
        if table is None:
            continue
        q = _question(rng, table)
        if q is None:
            continue
        kind, question, code, answer = q
        prompt = text[:table.end].rstrip("\n") + "\n\n" + question + "```python\n" + code + "\n```\n```text\n"
        items.append(DataItem(prompt, kind, question.split("\n\n")[1], answer))
    return items


def first_number(text: str) -> float | None:
    m = _NUMBER.search(text)
    return float(m.group(0)) if m else None


def check(item: DataItem, completion: str) -> dict:
    got = first_number(completion)
    if got is None:
        return {"got": None, "exact": False}
    exact = round(got, 2) == round(item.answer, 2) if item.kind == "mean" else got == item.answer
    return {"got": got, "exact": exact}


def run(lm: LanguageModel, texts: Sequence[str], limit: int, seed: int) -> ProbeResult:
    items = build_items(texts, limit, seed)
    verdicts, examples = complete_items(
        lm, items, [item.prompt for item in items], MAX_NEW_TOKENS,
        [lambda text: "\n" in text.lstrip("\n")] * len(items),  # one line of output
        lambda item, out: check(item, out.text),
        lambda item, text: {"question": item.question, "answer": item.answer, "completion": text})
    return ProbeResult(NAME, VERSION, shares(verdicts, exact="exact"), len(items), examples)
