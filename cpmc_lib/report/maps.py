"""Tables of the CAM maps: mIoU and diagnostics per method, and an ablation's verdict in sentences."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cam_methods import CAM_METHODS
from .text import _effect, compare, fmt, markdown_table

__all__ = ["CAM_NAMES", "ablation_verdict", "fp_promise", "method_table"]


def method_table(results: Mapping[str, Mapping[str, Any]], pathology: bool = True) -> str:
    """CAM results per method: where it comes from, the mIoU at the pipeline's own ground-truth-free cut
    (when scored), then the oracle view (mIoU, precision and recall at the ground-truth-best threshold);
    a second table gives the diagnostics.

    Args:
        results: method -> the dict :func:`cpmc_lib.cams.run` returns.
        pathology: add body/part recall and context/neutral activation when present.
    """
    rows = []
    for method, r in results.items():
        row = {"method": method, "from": getattr(CAM_METHODS.get(method), "origin", "") or "–"}
        if "gt_free" in r:
            row["mIoU, GT-free cut"] = r["gt_free"]["miou"]
        row.update({
            "mIoU, oracle": r["miou"],
            "oracle threshold": f"{r['threshold']:.2f}",
            "precision": r["precision"],
            "recall": r["recall"],
        })  # fmt: skip
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
    main = ["method", "from", "mIoU, GT-free cut", "mIoU, oracle", "oracle threshold", "precision", "recall"]
    main = [c for c in columns if c in main]
    diag = ["method", *[c for c in columns if c not in main]]
    if len(diag) == 1:
        return markdown_table(rows, columns, digits=1)
    # Two narrow tables rather than one that overflows the book's column.
    return (markdown_table(rows, main, digits=1) + "\n\n*Where the maps fail, by the diagnostic masks (recall in % at "
            "the oracle threshold, mean activation in [0, 1]):*\n\n" + markdown_table(rows, diag, digits=1))  # fmt: skip


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


def fp_promise(proto: Mapping[str, Any], cpmc: Mapping[str, Any], split: Mapping[str, Any] | None = None) -> str:
    """The FP promise read at the pipeline's own operating point, in generated sentences and a table.

    Args:
        proto, cpmc: the two maps' scores at the ground-truth-free decision
            (:func:`cpmc_lib.pseudo.rule_scores`, ``metrics.json``'s ``cams.<m>.gt_free``), with
            ``pathology``.
        split: :func:`cpmc_lib.pseudo.fp_split_scores` (``cams.cpmc.gt_free.fp_split``), or None.

    Returns:
        Markdown: how calibration moves body recall and the context / distractor shares labelled
        object, whether the promise (neither share rises above the prototype CAM's) holds, and,
        with ``split``, per kind of background the share the two paired maps disagree on (what a
        discrepancy can see) and share, and what CPMC keeps of each.

    Example:
        >>> path = lambda b, c, d: {"pathology": {"recall_body": b, "fp_context": c, "fp_distractor": d}}
        >>> text = fp_promise(path(60.0, 11.5, 22.7), path(67.0, 12.2, 24.2))
        >>> "raises body recall (60.0 -> 67.0 %)" in text, "**does not hold**" in text
        (True, True)
    """
    p, c = proto["pathology"], cpmc["pathology"]
    kept = c["fp_context"] <= p["fp_context"] and c["fp_distractor"] <= p["fp_distractor"]
    shares = " and ".join(
        f"{compare(p[k], c[k])} the share of {name} pixels labelled object ({p[k]:.1f} -> {c[k]:.1f} %)"
        for k, name in (("fp_context", "class-context"), ("fp_distractor", "distractor"))
    )
    out = [
        f"At the pipeline's own decision (the background rule that reads no ground truth), calibration "
        f"{compare(p['recall_body'], c['recall_body'])} body recall ({p['recall_body']:.1f} -> {c['recall_body']:.1f} %) "
        f"and {shares}. The FP side's promise, that neither share rises above the prototype CAM's, "
        + ("holds at this operating point." if kept else "**does not hold** at this operating point.")
    ]
    if split:
        rows = [{"background": kind, "disagree (%)": r["disagree"], "shared (%)": r["shared"],
                 "CPMC keeps of disagree (%)": r["c_in_disagree"], "CPMC keeps of shared (%)": r["c_in_shared"],
                 "CPMC adds (%)": r["c_added"]} for kind, r in split.items() if kind != "maps"]  # fmt: skip
        ctx = split["context"]
        out += [
            f"Which false positives a discrepancy can see: a background pixel that one of the paired maps "
            f"({split['maps']['a']}, {split['maps']['b']}) labels object and the other does not is in the "
            f"*disagree* group, where the FP local prototypes are built; one both label object is *shared*, out "
            f"of their sight. Of the class-context pixels, {ctx['disagree']:.1f} % are disagree and "
            f"{ctx['shared']:.1f} % shared; CPMC still labels object {ctx['c_in_disagree']:.1f} % of the first and "
            f"{ctx['c_in_shared']:.1f} % of the second, and {ctx['c_added']:.1f} % that neither paired map did "
            f"(all shares in percent of the kind's pixels, each group's kept share in percent of the group).",
            markdown_table(rows, list(rows[0])),
        ]
    return "\n\n".join(out)
