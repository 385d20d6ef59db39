"""Built-in source `data-notebooks`: notebook-style analyses of small tables with their real results.

A notebook is a table (data_tables), a load cell, then a few analysis cells (totals, group-by
sums and means, counts, filters, correlations, derived columns, ...) in plain Python. Every
cell is executed here, so each output block is what the code prints and each sentence about
the result quotes values the code computed.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Callable, Iterator

from engine.data.builtin.data_tables import Table, draw_table


@dataclass
class Cell:
    """One analysis step: a heading, the question, the code, and how to narrate its result."""

    heading: str
    question: str
    code: str
    narrate: Callable[[dict], str]
    pandas: str = ""


class Printer:
    """Stands in for `print` in executed cells and collects what they write."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def __call__(self, *args, sep: str = " ", end: str = "\n", **_: object) -> None:
        self.parts.append(sep.join(str(a) for a in args) + end)

    def take(self) -> str:
        out, self.parts = "".join(self.parts), []
        return out.rstrip("\n")


def _nice(x: float) -> float | int:
    """A round threshold near x (what a person would type)."""
    if abs(x) >= 100:
        return int(round(x, -1))
    if abs(x) >= 10:
        return int(round(x))
    return round(x, 1)


def _unit(table: Table, col: str) -> str:
    try:
        unit = table.column(col).unit
    except StopIteration:
        return ""
    return f" {unit}" if unit else ""


def _pick(rng: random.Random, items: list[str]) -> str:
    return items[rng.randrange(len(items))]


def summary_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell:
    col = _pick(rng, cols["num"])
    v = f"vals_{col}"
    code = (
        f'{v} = [r["{col}"] for r in rows]\n'
        f"mean_{col} = round(statistics.mean({v}), 2)\n"
        f"median_{col} = round(statistics.median({v}), 3)\n"
        f"sd_{col} = round(statistics.stdev({v}), 2)\n"
        f'print("count:", len({v}))\n'
        f'print("mean:", mean_{col})\n'
        f'print("median:", median_{col})\n'
        f'print("min:", min({v}), "max:", max({v}))\n'
        f'print("stdev:", sd_{col})'
    )

    def narrate(ns: dict) -> str:
        mean, med, sd = ns[f"mean_{col}"], ns[f"median_{col}"], ns[f"sd_{col}"]
        skew = "above" if mean > med else "below" if mean < med else "equal to"
        return (f"The mean `{col}` is {mean}{_unit(t, col)}, {skew} the median of {med}; values run from "
                f"{min(ns[v])} to {max(ns[v])} with a standard deviation of {sd}.")

    return Cell(f"Summary of `{col}`", f"What does a typical `{col}` look like?", code, narrate,
                f'df["{col}"].describe()')


def total_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell | None:
    if not cols["sum"]:
        return None
    col = _pick(rng, cols["sum"])
    code = f'total_{col} = round(sum(r["{col}"] for r in rows), 2)\nprint(total_{col})'
    return Cell(f"Total `{col}`", f"What is the total `{col}` over all {len(t.rows)} rows?", code,
                lambda ns: f"Altogether the table adds up to {ns[f'total_{col}']}{_unit(t, col)} of `{col}`.",
                f'df["{col}"].sum()')


def extremes_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell:
    col = _pick(rng, cols["num"])
    labels = t.names("cat")
    show = " ".join(f'r_hi["{c}"],' for c in labels)
    show_lo = " ".join(f'r_lo["{c}"],' for c in labels)
    code = (
        f'r_hi = max(rows, key=lambda r: r["{col}"])\n'
        f'r_lo = min(rows, key=lambda r: r["{col}"])\n'
        f'print("highest:", {show} r_hi["{col}"])\n'
        f'print("lowest:", {show_lo} r_lo["{col}"])'
    )

    def narrate(ns: dict) -> str:
        hi, lo = ns["r_hi"], ns["r_lo"]
        who_hi = ", ".join(f"{c} {hi[c]}" for c in labels)
        who_lo = ", ".join(f"{c} {lo[c]}" for c in labels)
        return (f"The largest `{col}` is {hi[col]}{_unit(t, col)} ({who_hi}); the smallest is {lo[col]} ({who_lo}), "
                f"a spread of {round(hi[col] - lo[col], 3)}.")

    return Cell(f"Highest and lowest `{col}`", f"Which row has the highest `{col}`, and which the lowest?", code,
                narrate, f'df.loc[df["{col}"].idxmax()]')


def group_sum_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell | None:
    groups = t.names("group")
    if not groups or not cols["sum"]:
        return None
    g, col = _pick(rng, groups), _pick(rng, cols["sum"])
    var = f"sum_{col}_by_{g}"
    code = (
        f"{var} = {{}}\n"
        f"for r in rows:\n"
        f'    {var}[r["{g}"]] = {var}.get(r["{g}"], 0) + r["{col}"]\n'
        f"for key in sorted({var}):\n"
        f"    print(key, round({var}[key], 2))"
    )

    def narrate(ns: dict) -> str:
        sums = {k: round(x, 2) for k, x in ns[var].items()}
        ranked = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
        top, total = ranked[0], sum(ns[var].values())
        share = round(100 * ns[var][top[0]] / total, 1) if total else 0.0
        text = f"{top[0]} leads with {top[1]}{_unit(t, col)}, {share}% of the total"
        if len(ranked) > 1:
            text += f"; {ranked[-1][0]} is last with {ranked[-1][1]}"
        return text + f". In order: {', '.join(f'{k} {v}' for k, v in ranked)}."

    return Cell(f"`{col}` by `{g}`", f"How much `{col}` does each `{g}` account for?", code, narrate,
                f'df.groupby("{g}")["{col}"].sum()')


def group_mean_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell | None:
    groups = t.names("group")
    if not groups:
        return None
    g, col = _pick(rng, groups), _pick(rng, cols["num"])
    var = f"mean_{col}_by_{g}"
    code = (
        f"acc = {{}}\n"
        f"for r in rows:\n"
        f'    acc.setdefault(r["{g}"], []).append(r["{col}"])\n'
        f"{var} = {{key: round(sum(v) / len(v), 2) for key, v in acc.items()}}\n"
        f"for key in sorted({var}):\n"
        f'    print(key, {var}[key], "n =", len(acc[key]))'
    )

    def narrate(ns: dict) -> str:
        means = ns[var]
        ranked = sorted(means.items(), key=lambda kv: (-kv[1], kv[0]))
        hi, lo = ranked[0], ranked[-1]
        if hi[0] == lo[0]:
            return f"Every row has `{g}` {hi[0]}, with a mean `{col}` of {hi[1]}{_unit(t, col)}."
        return (f"The mean `{col}` is highest for {hi[0]} ({hi[1]}{_unit(t, col)}) and lowest for {lo[0]} ({lo[1]}), "
                f"a gap of {round(hi[1] - lo[1], 2)}. Some groups are small, so treat the gap with care.")

    return Cell(f"Average `{col}` per `{g}`", f"Does the average `{col}` differ between values of `{g}`?", code,
                narrate, f'df.groupby("{g}")["{col}"].mean()')


def count_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell | None:
    groups = t.names("group")
    if not groups:
        return None
    g = _pick(rng, groups)
    var = f"count_{g}"
    code = (
        f"from collections import Counter\n"
        f'{var} = Counter(r["{g}"] for r in rows)\n'
        f"for key, n in sorted({var}.items(), key=lambda kv: (-kv[1], kv[0])):\n"
        f"    print(key, n)"
    )

    def narrate(ns: dict) -> str:
        ranked = sorted(ns[var].items(), key=lambda kv: (-kv[1], kv[0]))
        return (f"There are {len(ranked)} distinct values of `{g}`; the most frequent is {ranked[0][0]} with "
                f"{ranked[0][1]} of {len(t.rows)} rows.")

    return Cell(f"Rows per `{g}`", f"How many rows are there for each `{g}`?", code, narrate,
                f'df["{g}"].value_counts()')


def threshold_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell:
    col = _pick(rng, [c for c in cols["num"] if c in t.names()])
    values = sorted(t.values(col))
    cut = _nice(values[len(values) // 2] if rng.random() < 0.5 else statistics.mean(values))
    code = (
        f"cut = {cut}\n"
        f'over = [r for r in rows if r["{col}"] > cut]\n'
        f'print(len(over), "of", len(rows), "rows have {col} >", cut)\n'
        f"print(round(100 * len(over) / len(rows), 1))"
    )

    def narrate(ns: dict) -> str:
        n, total = len(ns["over"]), len(t.rows)
        return f"{n} of {total} rows ({round(100 * n / total, 1)}%) have `{col}` above {cut}{_unit(t, col)}."

    return Cell(f"Rows with `{col}` above {cut}", f"How many rows have `{col}` greater than {cut}?", code, narrate,
                f'(df["{col}"] > {cut}).sum()')


def correlation_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell | None:
    base = [c for c in cols["num"] if c in t.names() and len(set(t.values(c))) > 1]
    if len(base) < 2:
        return None
    x, y = rng.sample(base, 2)
    code = (
        f'xs = [r["{x}"] for r in rows]\n'
        f'ys = [r["{y}"] for r in rows]\n'
        f"r_{x}_{y} = round(statistics.correlation(xs, ys), 3)\n"
        f"print(r_{x}_{y})"
    )

    def narrate(ns: dict) -> str:
        r = ns[f"r_{x}_{y}"]
        size = abs(r)
        strength = "strong" if size >= 0.7 else "moderate" if size >= 0.4 else "weak" if size >= 0.15 else "almost no"
        sign = "positive" if r > 0 else "negative"
        words = f"{strength} {sign}" if strength != "almost no" else "almost no"
        return (f"Pearson's r between `{x}` and `{y}` is {r}: {words} linear relationship "
                f"(r^2 = {round(r * r, 3)}), measured on only {len(t.rows)} rows.")

    return Cell(f"Correlation of `{x}` and `{y}`", f"Do `{x}` and `{y}` move together?", code, narrate,
                f'df["{x}"].corr(df["{y}"])')


def top_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell:
    col = _pick(rng, cols["num"])
    k = min(3, len(t.rows))
    labels = t.names("cat")
    fields = ", ".join(f'r["{c}"]' for c in labels)
    code = (
        f'top = sorted(rows, key=lambda r: r["{col}"], reverse=True)[:{k}]\n'
        f"for r in top:\n"
        f'    print({fields}, r["{col}"])'
    )

    def narrate(ns: dict) -> str:
        items = "; ".join(" ".join(str(r[c]) for c in labels) + f" with {r[col]}" for r in ns["top"])
        return f"The top {k} rows by `{col}` are: {items}."

    return Cell(f"Top {k} by `{col}`", f"Which {k} rows have the largest `{col}`?", code, narrate,
                f'df.nlargest({k}, "{col}")')


def filtered_mean_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell | None:
    groups = t.names("group")
    if not groups:
        return None
    g, col = _pick(rng, groups), _pick(rng, cols["num"])
    value = _pick(rng, sorted(set(t.values(g))))
    code = (
        f'subset = [r["{col}"] for r in rows if r["{g}"] == "{value}"]\n'
        f'rest = [r["{col}"] for r in rows if r["{g}"] != "{value}"]\n'
        f"m_in = round(sum(subset) / len(subset), 2)\n"
        f"m_out = round(sum(rest) / len(rest), 2) if rest else None\n"
        f'print("{value}:", m_in, "n =", len(subset))\n'
        f'print("others:", m_out, "n =", len(rest))'
    )

    def narrate(ns: dict) -> str:
        m_in, m_out = ns["m_in"], ns["m_out"]
        if m_out is None:
            return f"All rows have `{g}` = {value}; their mean `{col}` is {m_in}{_unit(t, col)}."
        cmp = "higher than" if m_in > m_out else "lower than" if m_in < m_out else "the same as"
        return (f"For `{g}` = {value} the mean `{col}` is {m_in}{_unit(t, col)} over {len(ns['subset'])} rows, "
                f"{cmp} the {m_out} of the other {len(ns['rest'])} rows.")

    return Cell(f"`{col}` when `{g}` is {value}", f"What is the average `{col}` for `{g}` = {value}, compared "
                f"with the rest?", code, narrate, f'df[df["{g}"] == "{value}"]["{col}"].mean()')


def derived_cell(rng: random.Random, t: Table, cols: dict[str, list[str]]) -> Cell | None:
    unused = [d for d in t.kind.derived if d[0] not in cols["num"]]
    if not unused:
        return None
    name, expr, meaning, additive = _pick(rng, unused)
    groups = t.names("group")
    g = _pick(rng, groups) if groups else None
    how = "total" if additive else "mean"
    code = f"for r in rows:\n    r[\"{name}\"] = {expr}\n"
    if additive:
        code += f"overall = round(sum(r[\"{name}\"] for r in rows), 2)\nprint(\"total:\", overall)"
    else:
        code += f"overall = round(statistics.mean(r[\"{name}\"] for r in rows), 2)\nprint(\"mean:\", overall)"
    if g:
        code += (f"\nacc = {{}}\nfor r in rows:\n    acc.setdefault(r[\"{g}\"], []).append(r[\"{name}\"])\n"
                 f"by_{g} = {{key: round({'sum(v)' if additive else 'sum(v) / len(v)'}, 2) for key, v in acc.items()}}\n"
                 f"best = max(sorted(by_{g}), key=by_{g}.get)\nprint(best, by_{g}[best])")
    cols["num"].append(name)
    if additive:
        cols["sum"].append(name)

    def narrate(ns: dict) -> str:
        text = f"The new column `{name}` ({meaning}) has a {how} of {ns['overall']} over all rows"
        if g:
            text += f"; by `{g}`, {ns['best']} has the highest {how} with {ns[f'by_{g}'][ns['best']]}"
        return text + "."

    return Cell(f"New column `{name}`", f"Add `{name}` ({meaning}) and see where it is largest.", code, narrate,
                f'df["{name}"] = {expr.replace("r[", "df[")}')


ANALYSES = (summary_cell, total_cell, extremes_cell, group_sum_cell, group_mean_cell, count_cell,
            threshold_cell, correlation_cell, top_cell, filtered_mean_cell, derived_cell)


def load_code(t: Table, rng: random.Random) -> str:
    """The first cell: the table as CSV text or Python tuples, parsed into a list of dicts."""
    header = "import statistics\n"
    if rng.random() < 0.6:
        conv = "".join(
            f'    r["{c.name}"] = {"int" if c.kind == "int" else "float"}(r["{c.name}"])\n'
            for c in t.columns if c.kind in ("int", "float")
        )
        return (header + "import csv\nimport io\n\n" + f'raw = """{t.csv_text()}"""\n'
                "rows = list(csv.DictReader(io.StringIO(raw)))\n" + (f"for r in rows:\n{conv}" if conv else "")
                + 'print(len(rows), "rows")')
    lines = []
    for row in t.rows:
        lines.append("    (" + ", ".join(repr(v) for v in row) + ("," if len(row) == 1 else "") + "),")
    cols = ", ".join(f'"{n}"' for n in t.names())
    return (header + "\ndata = [\n" + "\n".join(lines) + "\n]\n" + f"columns = [{cols}]\n"
            "rows = [dict(zip(columns, values)) for values in data]\n" + 'print(len(rows), "rows")')


def run_cell(code: str, ns: dict, printer: Printer) -> str:
    """Execute one cell in the notebook namespace and return what it printed."""
    exec(compile(code, "<notebook>", "exec"), ns)  # our own generated code, never user input
    return printer.take()


INTROS = (
    "We load the data, check its size, and answer a few questions about it.",
    "A short exploratory analysis in plain Python.",
    "Each step shows the code, its output and what it means.",
    "Quick look at this table before any modelling.",
)


def build_notebook(rng: random.Random) -> str:
    """One notebook document: table, load cell and 3-5 analysis cells with their computed outputs."""
    t = draw_table(rng)
    printer = Printer()
    ns: dict = {"print": printer, "__name__": "__notebook__"}
    parts = [f"# {t.title}", "",
             f"{len(t.rows)} {t.kind.row_noun}s with columns {', '.join(f'`{n}`' for n in t.names())}. "
             + INTROS[rng.randrange(len(INTROS))]]
    if rng.random() < 0.4:
        parts += ["", t.markdown()]
    code = load_code(t, rng)
    parts += ["", "```python", code, "```", "```text", run_cell(code, ns, printer), "```"]
    cols = {"num": t.names("num"), "sum": t.names("sum")}
    analyses = list(ANALYSES)
    rng.shuffle(analyses)
    want = rng.randint(3, 5)
    done = 0
    for make in analyses:
        if done >= want:
            break
        cell = make(rng, t, cols)
        if cell is None:
            continue
        out = run_cell(cell.code, ns, printer)
        parts += ["", f"## {cell.heading}", "", cell.question, "", "```python", cell.code, "```",
                  "```text", out, "```", "", cell.narrate(ns)]
        if cell.pandas and rng.random() < 0.35:
            parts[-1] += f" (With pandas: `{cell.pandas}`.)"
        done += 1
    return "\n".join(parts) + "\n"


def generate(seed: int) -> Iterator[str]:
    """Yield notebooks without end, deterministic for `seed`."""
    rng = random.Random(seed)
    while True:
        yield build_notebook(rng)
