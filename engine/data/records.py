"""Records (a jsonl line, a parquet row) into documents: a field or a template, chat messages, row filters.

- `field = "meta.body"`: the value at a dotted path; a list of chat messages (role/content, or
  ShareGPT's from/value) is rendered with the chat template of engine.data.chat_template.
- `template = "{title}\\n\\n{abstract}"`: placeholders filled by name (dotted for nested fields);
  `{{` and `}}` are literal braces. A record missing a placeholder's field is skipped.
- `where = { lang = "en", year = [2023, 2024] }`: keep records whose fields equal the value (or
  one of the listed values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

_MAP = (dict, Mapping)  # dict first: isinstance against typing's Mapping alone is slow

from engine.data.chat_template import ASSISTANT, SYSTEM, USER, render
from engine.templates import parse_template, template_fields

ROLES = {"system": SYSTEM, "user": USER, "human": USER, "assistant": ASSISTANT, "gpt": ASSISTANT}
_MISSING = object()


class RecordSkip(Exception):
    """A record that gives no document; `reason` is counted in the build's skips."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def lookup(record: Any, path: str) -> Any:
    """The value at a dotted path (`meta.lang`); _MISSING when any step is absent."""
    if isinstance(record, _MAP) and path in record:  # a key with a dot in it wins
        return record[path]
    value = record
    for part in path.split("."):
        if isinstance(value, _MAP) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def render_messages(messages: list) -> str:
    """Chat messages as our chat template's turns; RecordSkip for an unknown role or a non-text content."""
    turns = []
    for m in messages:
        if not isinstance(m, _MAP):
            raise RecordSkip("message not a table")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        symbol = ROLES.get(str(role).lower()) if isinstance(role, str) else None
        if symbol is None:
            raise RecordSkip(f"unknown chat role {role!r}")
        if not isinstance(content, str):
            raise RecordSkip("message content not a string")
        turns.append((symbol, content))
    if not turns:
        raise RecordSkip("no chat messages")
    return render(turns)


def is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, _MAP) for m in value)


def as_text(value: Any, name: str, whole: bool = False) -> str:
    """A field's value as document text: strings as they are, chat messages rendered, numbers written
    (inside a template only: a document that is just a number is no document)."""
    if isinstance(value, str):
        return value
    if is_messages(value):
        return render_messages(value)
    if whole:
        raise RecordSkip("null value" if value is None else f"no string field {name!r}")
    if value is _MISSING:
        raise RecordSkip(f"no field {name!r}")
    if value is None:
        raise RecordSkip(f"null field {name!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordSkip(f"field {name!r} not text")
    return str(value)


@dataclass(frozen=True)
class RecordFormat:
    """How a source turns records into documents: a field or a template, and row filters."""

    field: str = "text"
    template: str = ""
    where: tuple[tuple[str, tuple], ...] = ()
    pieces: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def of(cls, field: str = "text", template: str = "", where: Mapping[str, Any] | None = None) -> "RecordFormat":
        pairs = tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in (where or {}).items())
        pieces = tuple(parse_template(template)) if template else ()
        return cls(field=field, template=template, where=pairs, pieces=pieces)

    @property
    def columns(self) -> list[str]:
        """Top-level columns the documents need (what a parquet reader projects onto)."""
        names = template_fields(self.template) if self.template else [self.field]
        names += [k for k, _ in self.where]
        return list(dict.fromkeys(n.split(".")[0] for n in names))

    def keep(self, record: Any) -> bool:
        for path, allowed in self.where:
            value = lookup(record, path)
            if value is _MISSING or not any(_equal(value, a) for a in allowed):
                return False
        return True

    def render(self, record: Any) -> str:
        """The record's document; RecordSkip when it has none."""
        if not self.template:
            value = lookup(record, self.field) if isinstance(record, _MAP) else _MISSING
            return as_text(value, self.field, whole=True)
        if not isinstance(record, _MAP):
            raise RecordSkip("record not an object")
        out = []
        for literal, name in self.pieces:
            out.append(literal)
            if name:
                out.append(as_text(lookup(record, name), name))
        return "".join(out)


def _equal(value: Any, wanted: Any) -> bool:
    # true == 1 in Python; a filter on a boolean column should not keep the integer 1.
    return isinstance(value, bool) == isinstance(wanted, bool) and value == wanted
