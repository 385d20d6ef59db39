"""Record templates (`template = "{title}\\n\\n{abstract}"` in a source): their syntax, checked where a
profile is read and used where records become documents (engine.data.records)."""

from __future__ import annotations

import string


class TemplateError(ValueError):
    """A template that does not parse: the message says what is wrong."""


def parse_template(template: str) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) pieces; refuses positional `{}`, conversions and format specs."""
    pieces: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"expected balanced braces ({exc}; write {{{{ or }}}} for a literal brace)") from None
    for literal, name, spec, conv in parsed:
        if name is None:
            pieces.append((literal, None))
            continue
        if not name or name.isdigit():
            raise TemplateError("expected named placeholders such as {title}, not {} or {0}")
        if spec or conv:
            raise TemplateError(f"expected plain placeholders such as {{{name.split(':')[0]}}}, without ! or :")
        if any(not part for part in name.split(".")) or "[" in name:
            raise TemplateError(f"expected a field name or dotted path in {{{name}}}")
        pieces.append((literal, name))
    if not any(name for _, name in pieces):
        raise TemplateError("expected at least one {field} placeholder")
    return pieces


def template_fields(template: str) -> list[str]:
    """Dotted field names a template uses, in order, without repeats."""
    return list(dict.fromkeys(name for _, name in parse_template(template) if name))
