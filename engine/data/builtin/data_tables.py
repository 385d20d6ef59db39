"""Random but plausible small tables (sales, sensors, experiments, ...) for the data notebooks.

Each table kind lists its columns and how to draw a row; later columns may depend on earlier
ones (absorbance follows concentration, revenue-like columns follow units), so correlations
and group differences in the analyses mean something.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Union

Value = Union[str, int, float]


@dataclass(frozen=True)
class Column:
    """One column: its name, kind ("cat", "int" or "float"), unit and how to draw a value."""

    name: str
    kind: str
    draw: Callable[[random.Random, dict], Value]
    unit: str = ""
    decimals: int = 2
    group: bool = True  # a category worth grouping by (False for per-row identifiers)
    additive: bool = True  # a numeric column whose sum means something (units yes, prices no)


@dataclass(frozen=True)
class TableKind:
    """A kind of table: titles to pick from, what one row is, its columns and row count range."""

    key: str
    titles: tuple[str, ...]
    row_noun: str
    columns: tuple[Column, ...]
    rows: tuple[int, int] = (8, 18)
    # (new column, Python expression over `r`, what it means, whether its sum means something)
    derived: tuple[tuple[str, str, str, bool], ...] = ()


@dataclass
class Table:
    """A drawn table: column specs and rows (lists in column order)."""

    kind: TableKind
    title: str
    columns: tuple[Column, ...]
    rows: list[list[Value]]

    def names(self, kind: str | None = None) -> list[str]:
        """Column names, optionally only those of one kind ("cat" or numeric "num")."""
        if kind is None:
            return [c.name for c in self.columns]
        if kind == "num":
            return [c.name for c in self.columns if c.kind in ("int", "float")]
        if kind == "sum":
            return [c.name for c in self.columns if c.kind in ("int", "float") and c.additive]
        if kind == "group":
            return [c.name for c in self.columns if c.kind == "cat" and c.group]
        return [c.name for c in self.columns if c.kind == kind]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def values(self, name: str) -> list[Value]:
        i = self.names().index(name)
        return [row[i] for row in self.rows]

    def cell_text(self, col: Column, value: Value) -> str:
        return f"{value:.{col.decimals}f}" if col.kind == "float" else str(value)

    def csv_text(self) -> str:
        lines = [",".join(self.names())]
        lines += [",".join(self.cell_text(c, v) for c, v in zip(self.columns, row)) for row in self.rows]
        return "\n".join(lines)

    def markdown(self) -> str:
        names = self.names()
        lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---" for _ in names) + "|"]
        lines += ["| " + " | ".join(self.cell_text(c, v) for c, v in zip(self.columns, row)) + " |" for row in self.rows]
        return "\n".join(lines)


def _cat(options: tuple[str, ...]) -> Callable[[random.Random, dict], str]:
    return lambda rng, row: rng.choice(options)


def _uniform(lo: float, hi: float, decimals: int = 2) -> Callable[[random.Random, dict], float]:
    return lambda rng, row: round(rng.uniform(lo, hi), decimals)


def _int(lo: int, hi: int) -> Callable[[random.Random, dict], int]:
    return lambda rng, row: rng.randint(lo, hi)


PRODUCT_PRICE = {"Widget": 3.5, "Gadget": 12.0, "Gizmo": 7.25, "Doohickey": 1.8, "Sprocket": 4.6}
CROP_YIELD = {"wheat": 7.5, "barley": 6.2, "maize": 9.8, "oats": 5.1}
GROUP_SHIFT = {"control": 0.0, "treatment A": 4.0, "treatment B": 7.5}
PAGE_VISITS = {"/home": 900, "/pricing": 300, "/docs": 550, "/blog": 240, "/signup": 120}
CITY_RAIN = {"Bergen": 190, "Madrid": 35, "Dublin": 75, "Singapore": 210, "Cairo": 3}
CITY_TEMP = {"Bergen": 12, "Madrid": 24, "Dublin": 14, "Singapore": 31, "Cairo": 30}

TABLE_KINDS: tuple[TableKind, ...] = (
    TableKind("sales", ("Weekly sales by region", "Store sales, one week", "Regional sales ledger"), "sale", (
        Column("region", "cat", _cat(("North", "South", "East", "West"))),
        Column("product", "cat", _cat(tuple(PRODUCT_PRICE))),
        Column("units", "int", _int(1, 60), "units"),
        Column("price", "float", lambda rng, row: round(PRODUCT_PRICE[row["product"]] * rng.uniform(0.9, 1.1), 2),
               "EUR", additive=False),
    ), derived=(("revenue", 'r["units"] * r["price"]', "revenue in EUR", True),)),
    TableKind("sensors", ("Greenhouse sensor readings", "Hourly sensor log", "Temperature and humidity readings"),
              "reading", (
        Column("sensor", "cat", _cat(("S1", "S2", "S3", "S4"))),
        Column("hour", "int", _int(0, 23), "h", additive=False),
        Column("temperature_c", "float", lambda rng, row: round(18 + 6 * (1 - abs(row["hour"] - 14) / 14)
                                                                 + rng.gauss(0, 1.2), 1), "degrees C", 1, additive=False),
        Column("humidity_pct", "float", lambda rng, row: round(75 - 1.5 * row["temperature_c"] + rng.gauss(0, 3), 1),
               "%", 1, additive=False),
    )),
    TableKind("experiment", ("Results of a reaction-time experiment", "Trial results by group",
                             "Experiment: treatment versus control"), "subject", (
        Column("group", "cat", _cat(tuple(GROUP_SHIFT))),
        Column("subject", "cat", lambda rng, row: f"P{rng.randint(100, 999)}", group=False),
        Column("score", "float", lambda rng, row: round(rng.gauss(60 + GROUP_SHIFT[row["group"]], 6), 1),
               "points", 1, additive=False),
        Column("time_s", "float", lambda rng, row: round(rng.gauss(32 - row["score"] / 10, 1.5), 2), "s", additive=False),
    ), (9, 20)),
    TableKind("weather", ("Monthly weather summary", "Rainfall and temperature by city"), "month of data", (
        Column("city", "cat", _cat(tuple(CITY_RAIN))),
        Column("month", "cat", _cat(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"))),
        Column("rainfall_mm", "float", lambda rng, row: round(max(0.0, rng.gauss(CITY_RAIN[row["city"]], 25)), 1),
               "mm", 1),
        Column("max_temp_c", "float", lambda rng, row: round(rng.gauss(CITY_TEMP[row["city"]], 3), 1),
               "degrees C", 1, additive=False),
    )),
    TableKind("grades", ("End-of-term grades", "Exam scores by class"), "student", (
        Column("student", "cat", _cat(("Ana", "Ben", "Chloe", "Dev", "Emma", "Finn", "Gita", "Hugo", "Iris", "Jack",
                                       "Kofi", "Lena", "Mo", "Nina", "Omar", "Pia")), group=False),
        Column("class", "cat", _cat(("7A", "7B", "7C"))),
        Column("math", "int", lambda rng, row: min(100, max(20, int(rng.gauss(68, 14)))), "points", additive=False),
        Column("physics", "int", lambda rng, row: min(100, max(20, int(row["math"] * 0.7 + rng.gauss(20, 9)))),
               "points", additive=False),
        Column("english", "int", lambda rng, row: min(100, max(20, int(rng.gauss(71, 12)))), "points", additive=False),
    ), derived=(("average", '(r["math"] + r["physics"] + r["english"]) / 3', "average over the three subjects",
                 False),)),
    TableKind("traffic", ("Website traffic by page", "Daily page views"), "page-day", (
        Column("page", "cat", _cat(tuple(PAGE_VISITS))),
        Column("day", "cat", _cat(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))),
        Column("visits", "int", lambda rng, row: max(5, int(rng.gauss(PAGE_VISITS[row["page"]],
                                                                         PAGE_VISITS[row["page"]] / 5))), "visits"),
        Column("bounce_rate", "float", _uniform(0.2, 0.8, 2), "", 2, additive=False),
    )),
    TableKind("inventory", ("Warehouse inventory snapshot", "Stock levels per warehouse"), "stock line", (
        Column("warehouse", "cat", _cat(("Rotterdam", "Leeds", "Lyon", "Gdansk"))),
        Column("item", "cat", _cat(("bolts", "nuts", "washers", "hinges", "brackets", "screws"))),
        Column("stock", "int", _int(0, 500), "pieces"),
        Column("unit_cost", "float", _uniform(0.05, 4.0, 2), "EUR", additive=False),
    ), derived=(("stock_value", 'r["stock"] * r["unit_cost"]', "stock value in EUR", True),)),
    TableKind("running", ("Training log of a running club", "Weekly runs"), "run", (
        Column("runner", "cat", _cat(("Alex", "Sam", "Kim", "Lou", "Ray"))),
        Column("week", "int", _int(1, 12), additive=False),
        Column("distance_km", "float", _uniform(3.0, 21.1, 1), "km", 1),
        Column("duration_min", "float", lambda rng, row: round(row["distance_km"] * rng.uniform(4.6, 6.8), 1), "min", 1),
    ), derived=(("pace_min_per_km", 'r["duration_min"] / r["distance_km"]', "pace in minutes per km", False),
                ("speed_kmh", 'r["distance_km"] / (r["duration_min"] / 60)', "speed in km/h", False))),
    TableKind("energy", ("Building energy use", "Monthly electricity consumption"), "meter reading", (
        Column("building", "cat", _cat(("Library", "Lab", "Gym", "Offices"))),
        Column("month", "cat", _cat(("Jan", "Feb", "Mar", "Apr", "May", "Jun"))),
        Column("occupancy", "int", _int(20, 400), "people"),
        Column("kwh", "float", lambda rng, row: round(1500 + 22 * row["occupancy"] + rng.gauss(0, 600), 1), "kWh", 1),
    ), derived=(("kwh_per_person", 'r["kwh"] / r["occupancy"]', "kWh per person", False),)),
    TableKind("lab", ("Calibration curve measurements", "Absorbance versus concentration"), "sample", (
        Column("batch", "cat", _cat(("B1", "B2", "B3"))),
        Column("concentration_mg_l", "float", lambda rng, row: float(rng.choice((0, 2, 4, 6, 8, 10, 12, 15, 20))),
               "mg/L", 1, additive=False),
        Column("absorbance", "float", lambda rng, row: round(0.012 + 0.048 * row["concentration_mg_l"]
                                                              + rng.gauss(0, 0.015), 3), "AU", 3, additive=False),
    ), (8, 14)),
    TableKind("orders", ("Online orders", "Customer orders, last month"), "order", (
        Column("customer", "cat", _cat(("C-101", "C-102", "C-103", "C-104", "C-105", "C-106"))),
        Column("category", "cat", _cat(("books", "toys", "garden", "kitchen"))),
        Column("quantity", "int", _int(1, 8), "items"),
        Column("amount", "float", lambda rng, row: round(row["quantity"] * rng.uniform(4, 30), 2), "USD"),
        Column("returned", "cat", lambda rng, row: "yes" if rng.random() < 0.15 else "no"),
    ), derived=(("price_per_item", 'r["amount"] / r["quantity"]', "price per item in USD", False),)),
    TableKind("crops", ("Field trial yields", "Harvest by field and crop"), "field plot", (
        Column("field", "cat", _cat(("F1", "F2", "F3", "F4", "F5"))),
        Column("crop", "cat", _cat(tuple(CROP_YIELD))),
        Column("area_ha", "float", _uniform(0.5, 6.0, 1), "ha", 1),
        Column("yield_t", "float", lambda rng, row: round(row["area_ha"] * rng.gauss(CROP_YIELD[row["crop"]], 0.8), 2),
               "t"),
    ), derived=(("t_per_ha", 'r["yield_t"] / r["area_ha"]', "yield in tonnes per hectare", False),)),
)


def draw_table(rng: random.Random, kind: TableKind | None = None) -> Table:
    """Draw a table of a random (or the given) kind with a random number of rows."""
    kind = kind or TABLE_KINDS[rng.randrange(len(TABLE_KINDS))]
    n = rng.randint(*kind.rows)
    rows = []
    for _ in range(n):
        row: dict = {}
        for col in kind.columns:
            row[col.name] = col.draw(rng, row)
        rows.append([row[c.name] for c in kind.columns])
    return Table(kind, rng.choice(kind.titles), kind.columns, rows)
