"""Tables of the CAM maps: mIoU and diagnostics per method, and an ablation's verdict in sentences."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cam_methods import CAM_METHODS
from .text import _effect, fmt, markdown_table

__all__ = ["CAM_NAMES", "ablation_verdict", "method_table"]


def method_table(results: Mapping[str, Mapping[str, Any]], pathology: bool = True) -> str:
    """CAM results per method: mIoU, best threshold, precision, recall, then (a second table) the diagnostics.

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
    main = [c for c in columns if c in ("method", "mIoU", "threshold", "precision", "recall")]
    diag = ["method", *[c for c in columns if c not in main]]
    if len(diag) == 1:
        return markdown_table(rows, columns, digits=1)
    # Two narrow tables rather than one that overflows the book's column.
    return (markdown_table(rows, main, digits=1) + "\n\n*Where the maps fail, by the diagnostic masks (recall in %, "
            "mean activation in [0, 1]):*\n\n" + markdown_table(rows, diag, digits=1))  # fmt: skip


def ablation_verdict(miou: Mapping[str, float], tol: float = 0.5) -> str:
    """One sentence per component from an ablation's mIoU by row name (rows of :func:`cpmc_lib.sweep.ablation_rows`).

    A change within ``tol`` points is reported as no effect; a loss is reported as such.
    """
    cam, refined, proto = miou["classifier CAM"], miou["+ context refinement"], miou["+ prototype CAM"]
    fn, fp, full = miou["+ FN local prototypes"], miou["+ FP local prototypes"], miou["full CPMC (FN + FP)"]
    lines = [
        f"- Context refinement over the classifier CAM: {_effect(refined - cam, tol)}.",
        f"- Prototype CAM (seeded by the refined CAM) over the refined CAM: {_effect(proto - refined, tol)}.",
        f"- FN local prototypes over the prototype CAM: {_effect(fn - proto, tol)}.",
        f"- FP local prototypes over the prototype CAM: {_effect(fp - proto, tol)}.",
        f"- Full CPMC: {full - cam:+.1f} over the classifier CAM, {full - proto:+.1f} over the prototype CAM.",
    ]
    extra = {
        "CPMC, no connectivity split": "Splitting the prototype's extra pixels by attachment (full CPMC over all of them as FN)",
        "CPMC, FP prototypes everywhere": "FP prototypes acting locally (full CPMC over FP prototypes acting everywhere)",
        "CPMC, first reading (pairing proto)": "This reconstruction over the first reading (pairing proto)",
        "CPMC, no strict prototype labels": "Strict prototype labels for the regions (full CPMC over plain arg-max)",
        "CPMC, FN prototypes everywhere": "FN prototypes acting near their object (full CPMC over everywhere)",
        "CPMC, no attachment gate": "The attachment gate (full CPMC over no gate)",
        "CPMC, no FP guards": "The three FP guards together (full CPMC over none of them)",
    }
    for row, what in extra.items():
        if row in miou:
            lines.append(f"- {what}: {_effect(full - miou[row], tol)}.")
    if "prototype CAM, no refinement" in miou:
        lines.append(
            "- Refinement as a seed source for the prototype CAM: "
            f"{_effect(proto - miou['prototype CAM, no refinement'], tol)}."
        )
    return "\n".join(lines)


# Method -> its title in tables, from the CAM-method registry.
CAM_NAMES = {m: c.title for m, c in CAM_METHODS.items()}
