"""The theme's semantic colours as rich styles, for widgets that draw their own text."""

from __future__ import annotations

from rich.style import Style
from textual.app import App
from textual.color import Color


def theme_color(app: App, name: str, default: str = "") -> str:
    """`$name` of the current theme as an opaque `#rrggbb` (alpha dropped), or `default`."""
    variables = app.theme_variables or app.get_css_variables()
    value = variables.get(name)
    if not value:
        return default
    try:
        return Color.parse(value).hex6
    except Exception:  # a variable that is not a colour
        return default


def theme_style(app: App, name: str, **kw) -> Style:
    color = theme_color(app, name)
    return Style(color=color or None, **kw)
