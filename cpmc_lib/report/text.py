"""Formatting the report tables share: numbers, the verb a measured change needs, Markdown tables,
and small readers of a ``metrics.json``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["compare", "delta", "direction", "fmt", "markdown_table"]


def fmt(value: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals (NaN and None, a missing value, as an en dash); anything else as ``str``."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "–"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def direction(
    delta: float,
    up: str = "raises",
    down: str = "lowers",
    flat: str = "leaves unchanged",
    tol: float = 0.0,
    digits: int | None = None,
) -> str:
    """The verb a sentence needs for a measured change, so prose cannot contradict its number.

    Args:
        delta: the measured change (after minus before).
        up, down: the verbs for a rise and for a fall.
        flat: the phrase for a change within ``tol`` (and for NaN).
        tol: changes with ``|delta| <= tol`` count as no change.
        digits: the decimals the numbers are printed with: a change below half a printed unit
            counts as no change too, so "raises" never sits beside two equal printed numbers.

    Example:
        >>> f"calibration {direction(0.20 - 0.12)} context activation"
        'calibration raises context activation'
        >>> direction(-1.5, up="helps", down="hurts", tol=0.5)
        'hurts'
    """
    if isinstance(delta, float) and math.isnan(delta):
        return flat
    if digits is not None:
        tol = max(tol, 0.5 * 10.0**-digits)
    if delta > tol:
        return up
    if delta < -tol:
        return down
    return flat


def compare(
    before: float,
    after: float,
    digits: int = 1,
    up: str = "raises",
    down: str = "lowers",
    flat: str = "leaves unchanged",
) -> str:
    """The verb for a change from ``before`` to ``after`` as the reader sees it, printed with ``digits`` decimals.

    Two numbers that print the same are "unchanged"; otherwise the sign of the printed difference
    decides, so the verb always agrees with the numbers beside it.

    Example:
        >>> compare(0.12, 0.20, digits=2)
        'raises'
        >>> compare(7.52, 7.48, digits=1)
        'leaves unchanged'
    """
    return direction(round(after, digits) - round(before, digits), up, down, flat, digits=digits)


def delta(before: float, after: float, digits: int = 1) -> str:
    """The signed difference of two numbers as printed with ``digits`` decimals (``8.84 -> 8.86`` is ``+0.1``).

    Example:
        >>> delta(8.84, 8.86)
        '+0.1'
    """
    return f"{round(after, digits) - round(before, digits):+.{digits}f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 1) -> str:
    """Rows of dicts as a Markdown table with the given columns (missing values as an en dash)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, float("nan")), digits) for c in columns) + " |")
    return "\n".join(lines)


def _effect(delta: float, tol: float) -> str:
    """A measured change as a verdict: helps, hurts, or no measurable effect within ``tol``."""
    if delta > tol:
        return f"helps (+{delta:.1f})"
    if delta < -tol:
        return f"**hurts** ({delta:.1f})"
    return f"no measurable effect ({delta:+.1f})"


def _get(m: Mapping[str, Any], path: str) -> float | None:
    """``m["a"]["b"]["c"]`` for ``path="a.b.c"``; None where a key is missing."""
    for key in path.split("."):
        if not isinstance(m, Mapping) or key not in m:
            return None
        m = m[key]
    return m if isinstance(m, (int, float)) and not isinstance(m, bool) else None


def _nan_to(x: float, value: float) -> float:
    return value if math.isnan(x) else x


def _num(x: float | None) -> float:
    """A missing value (None, as JSON stores it) as NaN."""
    return float("nan") if x is None else float(x)


def _mean_sd(values: Sequence[float], signed: bool = False) -> str:
    """"mean ± sd" of ``values`` (a gain: ``signed``, "+2.0 ± 1.0"); "–" for none, "± –" for one."""
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):{'+' if signed else ''}.1f}\u00a0±\u00a0{fmt(sd)}"
