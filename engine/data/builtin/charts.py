"""Bar and line charts of small generated tables, drawn with Pillow (no matplotlib), each paired with
a caption that states every value (known ground truth).

A chart has 3 to 6 categories with integer values 0 to 9; the plot area has a grid line at every
integer and the category's first letter under its bar or point, so each value can be read from
the image at 64 px. Colours vary per chart; the axis range is always 0-9.
"""

from __future__ import annotations

import random

W = H = 96  # drawn size; the image pipeline resizes to the stage's size
LEFT, RIGHT, TOP, BOTTOM = 8, 92, 8, 84  # plot area: value 0 at BOTTOM, 9 at TOP
TOPICS = (
    ("sales", ("North", "South", "East", "West", "Online", "Retail")),
    ("rainfall", ("January", "February", "March", "April", "May", "June")),
    ("visitors", ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")),
    ("goals", ("Ajax", "Benfica", "Celtic", "Dynamo", "Everton", "Fiorentina")),
    ("score", ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank")),
)
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def y_of(value: float) -> float:
    return BOTTOM - (BOTTOM - TOP) * value / 9


def draw_chart(kind: str, values: list[int], labels: list[str], colour: tuple[int, int, int]):
    """A bar or line chart of `values` (0-9) as a 96 px RGB Pillow image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for v in range(10):
        y = round(y_of(v))
        draw.line([LEFT, y, RIGHT, y], fill=(200, 200, 200) if v else (0, 0, 0))
    n = len(values)
    slot = (RIGHT - LEFT) / n
    centres = [LEFT + slot * (i + 0.5) for i in range(n)]
    if kind == "bar":
        for c, v in zip(centres, values):
            if v:
                draw.rectangle([round(c - slot * 0.3), round(y_of(v)), round(c + slot * 0.3), BOTTOM], fill=colour)
    else:
        pts = [(round(c), round(y_of(v))) for c, v in zip(centres, values)]
        draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    for c, label in zip(centres, labels):
        draw.text((round(c) - 3, BOTTOM + 1), label[0], fill=(0, 0, 0))
    return img


def generate(seed: int, count: int = 600):
    """`count` charts (ImageSample), each with one caption stating its values."""
    from engine.data.imagesources import ImageSample

    rng = random.Random(seed * 104729 + 3)
    for i in range(count):
        topic, names = TOPICS[rng.randrange(len(TOPICS))]
        n = rng.randint(3, 6)
        labels = list(names[:n])
        values = [rng.randint(0, 9) for _ in range(n)]
        kind = rng.choice(("bar", "line"))
        img = draw_chart(kind, values, labels, COLOURS[rng.randrange(len(COLOURS))])
        stated = ", ".join(f"{lab} {v}" for lab, v in zip(labels, values))
        yield ImageSample(f"chart-{i}", img, [f"A {kind} chart of {topic}: {stated}."],
                          {"kind": kind, "topic": topic, "labels": labels, "values": values})
