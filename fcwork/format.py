"""Text formatting shared by the CLI commands, the live CLI views, the panes and the widgets.

Plain functions over plain values: no Textual, no rich, of the engine only its mix rule, so any layer of
fcwork may import it. A helper used by one module only stays in that module; one needed in
two places (a command and a pane, two panes) lives here instead of being imported across.
"""

from __future__ import annotations

import math
from typing import Any

from engine.jobs.protocol import MixPolicy
from engine.mix import describe

# (probe, metric, label) rows of the probe tables, in display order.
PROBE_ROWS = (
    ("chess", "legal", "chess: legal next move"),
    ("chess", "match", "chess: game's move"),
    ("code", "compile", "code: body compiles"),
    ("data", "exact", "data: exact answer"),
    ("science", "accuracy", "science: cloze accuracy"),
    ("chat", "end", "chat: ends its turn"),
    ("chat", "correct", "chat: right answer"),
    ("chat", "chess", "chat: legal move named"),
    ("chat", "code", "chat: snippet's output"),
    ("chat", "table", "chat: table value"),
    ("fen", "square_accuracy", "image: FEN squares right"),
    ("fen", "blind", "image: FEN squares, blank image"),
    ("chart", "exact", "image: chart value read"),
    ("chart", "blind", "image: chart value, blank image"),
)
# (probe, metric) -> label, in display order.
PROBE_LABELS = {(p, m): label for p, m, label in PROBE_ROWS}


def probe_summary(probes: dict) -> str:
    """Probe scores on one line, e.g. "chess: legal next move 0.250, code: body compiles 0.500"."""
    return ", ".join(f"{label} {probes[p][m]:.3f}" for p, m, label in PROBE_ROWS
                     if isinstance(probes.get(p, {}).get(m), (int, float)))


def fmt_num(value: Any, digits: int = 4) -> str:
    """A loss, bits per byte or score with `digits` decimals; "-" when missing or not a number."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def fmt_loss_bpb(loss: Any, bpb: Any) -> str:
    """A held-out loss with its bits per byte in brackets, e.g. "2.3456 (1.234)"; "-" without a loss."""
    if not isinstance(loss, (int, float)):
        return "-"
    return f"{loss:.4f}" + (f" ({bpb:.3f})" if isinstance(bpb, (int, float)) else "")


def fmt_number(v: float, digits: int = 3) -> str:
    """Short form for axis labels and legends: `digits` significant digits, k/M/G for large values."""
    if v is None or not math.isfinite(v):
        return "-"
    a = abs(v)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= scale:
            return f"{v / scale:.{digits}g}{unit}"
    if a and a < 1e-3:
        return f"{v:.{max(0, digits - 2)}e}"
    return f"{v:.{digits}g}"


def fmt_progress(step: int, total: int = 0) -> str:
    """Steps done of a total for a narrow column: exact below 100,000 ("120/300"), else short
    ("1.23M/1.5M"); a step alone when the total is unknown."""
    if total and total < 100_000:
        return f"{step}/{total}"
    if total:
        return f"{fmt_number(step)}/{fmt_number(total)}"
    return str(step) if step < 100_000 else fmt_number(step)


def fmt_eta(seconds: float | None) -> str:
    """Time left as 1h05m, 4m09s or 37s; "-" when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def fmt_bytes(n: float) -> str:
    """A size on disk: "512 B", "1.2 kB", "3.4 GB" (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def mix_history_lines(mixes: Any, digits: int = 3) -> list[str]:
    """A run's mix history, one line per mix in force: "from step 60 (request 1): science=0.200 ..."
    (`mixes`: (step, weights, request id, "auto" or None) as RunHistory keeps them)."""
    out = []
    for step, weights, request in mixes:
        origin = " (auto)" if request == MixPolicy.AUTO else f" (request {request})" if request is not None else ""
        out.append(f"from step {step}{origin}: {describe(weights, digits)}")
    return out


def suggestion_lines(sug: dict[str, Any], in_force: dict[str, float] | None = None) -> tuple[str, str]:
    """A mix suggestion (a `suggestion` event) in two lines: the proposed weights with the step and
    whether it is in force, then the reasons, one per changed domain, joined."""
    mix = {str(d): float(w) for d, w in (sug.get("mix") or {}).items()}
    total = sum(mix.values()) or 1.0
    now = {d: w / (sum(in_force.values()) or 1.0) for d, w in in_force.items()} if in_force else {}
    taken = bool(now) and all(abs(now.get(d, 0.0) - w / total) < 1e-3 for d, w in mix.items())
    state = "applied (auto)" if sug.get("auto") else "in force" if taken else "a accepts"
    before = sug.get("current") if isinstance(sug.get("current"), dict) else {}
    reasons = sug.get("reasons") if isinstance(sug.get("reasons"), dict) else {}
    moves = [f"{d} {float(before.get(d, 0.0)):.2f}\u2192{mix.get(d, 0.0) / total:.2f}" for d in reasons] or [describe(mix, 2)]
    return f"suggested at step {sug.get('step')} ({state}): {', '.join(moves)}", "; ".join(map(str, reasons.values()))


def export_lines(exports: Any) -> list[str]:
    """A run's exports, one line each: "hf-f32-step300  12.3 MB" (`exports`: (name, bytes) pairs)."""
    return [f"{name}  {fmt_bytes(size)}" for name, size in exports]
