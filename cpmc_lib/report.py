"""Markdown tables of measured results, for the chapters and the command line."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["fmt", "markdown_table", "method_table"]


def fmt(value: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals (NaN as an en dash); anything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "–"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 1) -> str:
    """Rows of dicts as a Markdown table with the given columns (missing values as an en dash)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, float("nan")), digits) for c in columns) + " |")
    return "\n".join(lines)


def method_table(results: Mapping[str, Mapping[str, Any]], pathology: bool = True) -> str:
    """CAM results per method: mIoU, best threshold, precision, recall (and the diagnostics).

    Args:
        results: method -> the dict :func:`cpmc_lib.cams.run` returns.
        pathology: add body/part recall and context/neutral activation when present.
    """
    rows = []
    for method, r in results.items():
        row = {
            "method": method,
            "mIoU": r["miou"],
            "threshold": f"{r['threshold']:.2f}",
            "precision": r["precision"],
            "recall": r["recall"],
        }
        p = r.get("pathology") or {}
        if pathology and p:
            row.update(
                {
                    "body recall": p.get("recall_body", float("nan")),
                    "part recall": p.get("recall_part", float("nan")),
                    "atypical recall": p.get("recall_atypical", float("nan")),
                    # activations are maps in [0, 1]: two decimals
                    "context act.": fmt(p.get("act_context", float("nan")), 2),
                    "neutral act.": fmt(p.get("act_neutral", float("nan")), 2),
                    "distractor act.": fmt(p.get("act_distractor", float("nan")), 2),
                }
            )
        rows.append(row)
    columns = list(rows[0]) if rows else ["method"]
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    return markdown_table(rows, columns, digits=1)
