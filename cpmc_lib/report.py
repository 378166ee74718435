"""Markdown tables of measured results, for the chapters and the command line."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "label_row", "label_variants_table", "negatives_line", "scored_labels",
    "ablation_verdict", "ceiling_moved", "compare", "delta", "direction", "fmt", "headline", "markdown_table", "method_table",
    "promise_summary", "promise_table", "promises", "settings_tables", "spread_table", "label_pathologies",
    "error_table", "error_gap", "label_zone_table", "class_table", "class_gap", "body_groups", "class_spread_table", "metrics_class_table",
]  # fmt: skip


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


LABEL_COLUMNS = ("recall_body", "recall_atypical", "fp_context", "fp_distractor")


def scored_labels(pseudo: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The scored label sets of ``metrics.json``'s ``pseudo`` section (``cpmc``, ``cpmc_crf``, ...), without
    the entries that say how the labels were made (threshold, rule, negative prototypes).

    Example:
        >>> list(scored_labels({"threshold_rule": "otsu", "negatives": {"black-disc": 4}, "cpmc": {"miou": 1.0}}))
        ['cpmc']
    """
    return {k: v for k, v in pseudo.items() if isinstance(v, dict) and "miou" in v}


def label_variants_table(head: str, variants: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown row per variant of the same images' pseudo labels (name -> :func:`cpmc_lib.pseudo.make_labels`'s
    result): mIoU after the CRF, the share ignored, then its body / atypical recall and context /
    distractor labelled object where the data has diagnostic masks; ``head`` names the first column.

    Example:
        >>> print(label_variants_table("zone", {"on": {"miou_crf": 80.0, "ignore_frac_crf": 0.05}}).splitlines()[2])
        | on | 80.0 | 5.0 | – | – | – | – |
    """
    names = {"recall_body": "body recall", "recall_atypical": "atypical recall",
             "fp_context": "context labelled object (%)", "fp_distractor": "distractor labelled object (%)"}  # fmt: skip
    rows = []
    for name, r in variants.items():
        patho = r.get("pathology_crf", {})
        rows.append({head: name, "mIoU + CRF": r["miou_crf"], "ignored (%)": 100 * r["ignore_frac_crf"],
                     **{names[k]: patho.get(k) for k in LABEL_COLUMNS}})  # fmt: skip
    return markdown_table(rows, [head, "mIoU + CRF", "ignored (%)", *names.values()])


def negatives_line(pseudo: Mapping[str, Any]) -> str:
    """Which classes got negative prototypes and how often each class fired on images without it, from
    the pseudo stage's result or ``metrics.json``'s ``pseudo`` section ('' without ``pseudo.negatives``).

    Example:
        >>> negatives_line({"negatives": {"black-disc": 4}, "negative_firing": {"black-disc": 45.0}})
        'negative prototypes: black-disc (4); fired on images without them: black-disc 45.00 %'
    """
    if "negatives" not in pseudo:
        return ""
    got = ", ".join(f"{k} ({n})" for k, n in pseudo["negatives"].items()) or "none"
    firing = ", ".join(f"{k} {v:.2f} %" for k, v in pseudo.get("negative_firing", {}).items()) or "none"
    return f"negative prototypes: {got}; fired on images without them: {firing}"


def label_row(label: str, result: Mapping[str, Any]) -> str:
    """One Markdown row of a pseudo-label result (:func:`cpmc_lib.pseudo.make_labels`): mIoU, mIoU
    after the CRF, then the CRF labels' body and atypical recall and context and distractor labelled
    object (empty without diagnostic masks), as the tuning scripts print them.

    Example:
        >>> label_row("x", {"miou": 70.0, "miou_crf": 72.04, "pathology_crf": {"recall_body": 80.0}})
        '| x | 70.0 | 72.0 | 80.0 |  |  |  |'
    """
    p = result.get("pathology_crf", {})
    cells = [f"{result['miou']:.1f}", f"{result['miou_crf']:.1f}"]
    cells += [f"{p[k]:.1f}" if k in p else "" for k in LABEL_COLUMNS]
    return f"| {label} | " + " | ".join(cells) + " |"


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


def _effect(delta: float, tol: float) -> str:
    if delta > tol:
        return f"helps (+{delta:.1f})"
    if delta < -tol:
        return f"**hurts** ({delta:.1f})"
    return f"no measurable effect ({delta:+.1f})"


def ablation_verdict(miou: Mapping[str, float], tol: float = 0.5) -> str:
    """One sentence per component from an ablation's mIoU by row name (rows of ``explorer.ABLATION``).

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


CAM_NAMES = {
    "cam": "classifier CAM",
    "refined": "+ context refinement",
    "proto": "prototype CAM",
    "cpmc": "CPMC (calibrated)",
    "gradcam": "Grad-CAM (peer)",
    "gradcampp": "Grad-CAM++ (peer)",
    "layercam": "LayerCAM (peer)",
}


def ceiling_moved(curve: Sequence[float]) -> float:
    """How far a learning curve (val mIoU per epoch, at least 3) moved over its last two epochs:
    issue 16's convergence reading is |moved| < 0.5."""
    return curve[-1] - curve[-3]


def headline(metrics: Mapping[str, Any]) -> str:
    """The landing page's results: one Markdown table of a pipeline ``metrics.json``, then one
    sentence per comparison the book is about (CPMC against the classifier and prototype CAMs,
    the CRF, weak against full supervision). Sections the run has not reached are left out."""
    rows = [
        {"stage": "CAM (train split)", "what": CAM_NAMES.get(m, m), "mIoU (%)": r["miou"],
         "GT-free (%)": (r.get("gt_free") or {}).get("miou")}  # fmt: skip
        for m, r in metrics.get("cams", {}).items()
    ]
    pseudo = metrics.get("pseudo", {})
    for key, r in scored_labels(pseudo).items():
        what = f"{key.removesuffix('_crf')} pseudo labels" + (" + dense CRF" if key.endswith("_crf") else "")
        if r.get("ignore_frac"):  # scored on the labelled pixels only
            what += f" ({100 * r['ignore_frac']:.1f} % ignored)"
        rows.append({"stage": "pseudo labels (train split)", "what": what, "mIoU (%)": r["miou"]})
    seg = metrics.get("seg", {})
    if seg:
        rows.append({"stage": "segmentation (val split)", "what": "trained on pseudo labels",
                     "mIoU (%)": seg["wsss"]["miou"]})  # fmt: skip
        rows.append({"stage": "segmentation (val split)", "what": "trained on ground truth (ceiling)",
                     "mIoU (%)": seg["full"]["miou"]})  # fmt: skip
        if "ratio_crf" in seg:  # segmentation.test_crf: both networks again after the dense CRF
            for k, what in (("wsss", "trained on pseudo labels"), ("full", "trained on ground truth (ceiling)")):
                rows.append({"stage": "segmentation (val split)", "what": f"{what} + dense CRF",
                             "mIoU (%)": seg[k]["miou_crf"]})  # fmt: skip
    columns = ["stage", "what", "mIoU (%)"]
    if any(r.get("GT-free (%)") is not None for r in rows):
        columns.append("GT-free (%)")
    lines = [markdown_table(rows, columns), ""]
    if "GT-free (%)" in columns:
        lines.append("- CAM rows: *mIoU* cuts each map at its best threshold against the ground truth (IRN's "
                     "protocol, an oracle view); *GT-free* cuts it as the pseudo labels do, by the rule "
                     f"`{pseudo.get('threshold_rule')}`, which reads no ground truth.")  # fmt: skip
    cams = metrics.get("cams", {})
    if {"cam", "proto", "cpmc"} <= set(cams):
        cam, proto, cpmc = (cams[k]["miou"] for k in ("cam", "proto", "cpmc"))
        lines.append(f"- CPMC scores {delta(cam, cpmc)} mIoU over the classifier CAM and {delta(proto, cpmc)} over "
                     "the prototype CAM it calibrates.")  # fmt: skip
    crf = [k for k in pseudo if k.endswith("_crf") and k.removesuffix("_crf") in pseudo]
    for k in crf:
        change = delta(pseudo[k.removesuffix("_crf")]["miou"], pseudo[k]["miou"])
        zone = pseudo[k].get("ignore_frac") or pseudo[k.removesuffix("_crf")].get("ignore_frac")
        lines.append(f"- The dense CRF changes {k.removesuffix('_crf')} pseudo-label mIoU by {change}"
                     + (" (each scored on its own labelled pixels)." if zone else "."))  # fmt: skip
    if seg and len(c := seg["full"].get("curve", [])) >= 3:
        verdict = "converged by the < 0.5 reading" if abs(ceiling_moved(c)) < 0.5 else "still moving: an unfinished ceiling"
        lines.append(f"- The ground-truth ceiling's val mIoU moved {delta(c[-3], c[-1])} over its last two epochs "
                     f"of {len(c)}, {verdict} (its learning curve is in chapter 8).")  # fmt: skip
    if seg and "ratio_crf" in seg:
        lines.append(f"- Weak supervision reaches {100 * seg['ratio']:.1f} % of full supervision, "
                     f"{100 * seg['ratio_crf']:.1f} % with the dense CRF on both networks, the field's protocol "
                     "(with it, SIPE reaches 89 % and SFC 92 % of a DeepLabV2 ceiling on PASCAL VOC).")  # fmt: skip
    elif seg:
        lines.append(f"- Weak supervision reaches {100 * seg['ratio']:.1f} % of full supervision "
                     "(the best published WSSS methods reach about 90 % on PASCAL VOC).")  # fmt: skip
    return "\n".join(lines)


def promises(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """CPMC's promises (issue 16) checked on one pipeline ``metrics.json``.

    Returns:
        One dict per claim the run has reached: ``claim`` (short name), ``holds``, ``margin``
        (by how much it holds, > 0, or fails, < 0, in the claim's own unit; None for yes/no
        claims) and ``detail`` (the sentence with its numbers). CAM claims use each map's oracle
        best-threshold view, as the field reports them.
    """
    out: list[dict[str, Any]] = []

    def add(claim: str, margin: float | None, detail: str, holds: bool | None = None) -> None:
        out.append({"claim": claim, "holds": bool(margin >= 0) if holds is None else holds, "margin": margin,
                    "detail": detail})  # fmt: skip

    c = metrics.get("cams", {})
    if {"cam", "proto", "cpmc"} <= set(c):
        cam, proto, cpmc = (c[k]["miou"] for k in ("cam", "proto", "cpmc"))
        add("CAM < proto < CPMC", min(proto - cam, cpmc - proto),
            f"ordering: CAM {cam:.1f} < prototype CAM {proto:.1f} < CPMC {cpmc:.1f}",
            holds=cam < proto < cpmc)  # fmt: skip
        add("CPMC >= CAM + 10", cpmc - cam - 10, f"CPMC {cpmc:.1f} >= CAM {cam:.1f} + 10")
        add("CPMC >= proto + 3", cpmc - proto - 3, f"CPMC {cpmc:.1f} >= prototype CAM {proto:.1f} + 3")
        pp, cp = c["proto"].get("pathology") or {}, c["cpmc"].get("pathology") or {}
        if pp and cp:
            add("body recall >= proto + 5", cp["recall_body"] - pp["recall_body"] - 5,
                f"body recall {cp['recall_body']:.1f} >= prototype CAM's {pp['recall_body']:.1f} + 5")  # fmt: skip
            for key, name in (("fp_context", "context"), ("fp_distractor", "distractor")):
                add(f"{name} FP <= proto", pp[key] - cp[key],
                    f"{name} labelled object {cp[key]:.1f} <= prototype CAM's {pp[key]:.1f}")  # fmt: skip
    rule = metrics.get("pseudo", {}).get("threshold_rule")
    if rule is not None:
        add("GT-free pseudo labels", None, f"pseudo-label rule {rule!r} reads no ground truth", holds=rule != "oracle")
    seg = metrics.get("seg", {})
    if "ratio_crf" in seg:  # the field's protocol: both networks with the dense CRF (method notes: SIPE 0.89)
        add("weak/full >= 0.88", 100 * (seg["ratio_crf"] - 0.88),
            f"weak / full {seg['ratio_crf']:.3f} >= 0.88 (both networks + dense CRF; "
            f"{seg['ratio']:.3f} without)")  # fmt: skip
    elif "ratio" in seg:
        add("weak/full >= 0.88", 100 * (seg["ratio"] - 0.88), f"weak / full {seg['ratio']:.3f} >= 0.88")
    curve = seg.get("full", {}).get("curve", [])
    if len(curve) >= 3:
        moved = ceiling_moved(curve)
        add("ceiling converged", 0.5 - abs(moved), f"ceiling moved {moved:+.2f} over its last two epochs (< 0.5)")
    return out


# column heads of promise_table (the claims' names are too long for 10 columns in the book)
_SHORT = {
    "CAM < proto < CPMC": "order", "CPMC >= CAM + 10": "CAM + 10", "CPMC >= proto + 3": "proto + 3",
    "body recall >= proto + 5": "body + 5", "context FP <= proto": "context FP", "distractor FP <= proto": "distr. FP",
    "GT-free pseudo labels": "GT-free", "weak/full >= 0.88": "weak/full", "ceiling converged": "converged",
}  # fmt: skip


def _mark(p: Mapping[str, Any]) -> str:
    sign = "✓" if p["holds"] else "✗"
    return sign if p["margin"] is None else f"{sign}\u00a0{p['margin']:+.1f}"  # no break inside a cell


def promise_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per run (setting name -> ``metrics.json``), one column per promise: ✓ or ✗ with
    the margin by which it holds or fails (mIoU or percentage points; weak/full in points of %)."""
    checked = {name: {p["claim"]: p for p in promises(m)} for name, m in runs.items()}
    claims: list[str] = []
    for ps in checked.values():
        claims += [k for k in ps if k not in claims]
    rows = [{"setting": name, **{_SHORT.get(k, k): _mark(ps[k]) if k in ps else "–" for k in claims}}
            for name, ps in checked.items()]  # fmt: skip
    return markdown_table(rows, ["setting", *(_SHORT.get(k, k) for k in claims)])


def promise_summary(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown bullet per promise: on how many runs it holds, and where and by how much it fails."""
    by_claim: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, m in runs.items():
        for p in promises(m):
            by_claim.setdefault(p["claim"], []).append((name, p))
    lines = []
    for claim, results in by_claim.items():
        fails = [(n, p) for n, p in results if not p["holds"]]
        text = f"- **{claim}** holds on {len(results) - len(fails)} of {len(results)}"
        if fails:
            text += "; fails on " + ", ".join(
                n if p["margin"] is None else f"{n} ({p['margin']:+.1f})" for n, p in fails
            )
        lines.append(text + ".")
    return "\n".join(lines)


def _arrow(before: Mapping[str, float], after: Mapping[str, float], key: str) -> str:
    return f"{before[key]:.1f} → {after[key]:.1f}" if key in before and key in after else "–"


def settings_tables(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Two narrow Markdown tables over runs (setting name -> ``metrics.json``): the four maps' mIoU
    (oracle view, with CPMC's best threshold), then the numbers behind the promises (prototype CAM
    -> CPMC for body recall and context / distractor labelled object, the ground-truth-free pseudo
    labels with the CRF, weak / full)."""
    maps, claims = [], []
    for name, m in runs.items():
        c = m.get("cams", {})
        maps.append({"setting": name, **{CAM_NAMES[k]: c.get(k, {}).get("miou") for k in ("cam", "refined", "proto", "cpmc")},
                     "CPMC thr.": fmt(c.get("cpmc", {}).get("threshold"), 2)})  # fmt: skip
        pp, cp = (c.get(k, {}).get("pathology") or {} for k in ("proto", "cpmc"))
        pseudo, seg = m.get("pseudo", {}), m.get("seg", {})
        method = m.get("config", {}).get("pseudo", {}).get("method", "cpmc")
        crf = pseudo.get(f"{method}_crf", {}).get("miou")
        claims.append({
            "setting": name, "body recall": _arrow(pp, cp, "recall_body"), "context FP": _arrow(pp, cp, "fp_context"),
            "distractor FP": _arrow(pp, cp, "fp_distractor"), "pseudo + CRF": crf,
            "ignored (%)": 100 * ignored if (ignored := pseudo.get(f"{method}_crf", {}).get("ignore_frac")) else None,
            "weak / full (%)": 100 * seg["ratio"] if "ratio" in seg else None,
            "weak / full + CRF (%)": 100 * seg["ratio_crf"] if "ratio_crf" in seg else None,
        })  # fmt: skip
    cols = ["setting", *(CAM_NAMES[k] for k in ("cam", "refined", "proto", "cpmc")), "CPMC thr."]
    # the labels' ignore share, shown when some setting's labels leave pixels out (pseudo.band)
    # ... and weak / full after the dense CRF when some setting scored it (segmentation.test_crf)
    optional = ("ignored (%)", "weak / full + CRF (%)")
    claim_cols = [k for k in (claims[0] if claims else ["setting"]) if k not in optional or any(c[k] for c in claims)]
    return (markdown_table(maps, cols) + "\n\n*Prototype CAM → CPMC (%), pseudo labels from the rule that reads no "
            "ground truth (scored on their labelled pixels):*\n\n" + markdown_table(claims, claim_cols))  # fmt: skip


def _get(m: Mapping[str, Any], path: str) -> float | None:
    """``m["a"]["b"]["c"]`` for ``path="a.b.c"``; None where a key is missing."""
    for key in path.split("."):
        if not isinstance(m, Mapping) or key not in m:
            return None
        m = m[key]
    return m if isinstance(m, (int, float)) and not isinstance(m, bool) else None


# (row label, how to read it from a metrics.json): the headline numbers of spread_table
_HEADLINES = [
    ("classifier val mAP", lambda m: _get(m, "classifier.val_mAP")),
    *((f"{name} mIoU (oracle view)", lambda m, k=k: _get(m, f"cams.{k}.miou"))
      for k, name in (("cam", "classifier CAM"), ("refined", "refined CAM"), ("proto", "prototype CAM"),
                      ("cpmc", "CPMC"))),
    ("CPMC − classifier CAM", lambda m: _diff(m, "cams.cpmc.miou", "cams.cam.miou")),
    ("CPMC − prototype CAM", lambda m: _diff(m, "cams.cpmc.miou", "cams.proto.miou")),
    *((f"{what}: {'CPMC' if k == 'cpmc' else 'prototype CAM'}", lambda m, k=k, key=key: _get(m, f"cams.{k}.pathology.{key}"))
      for what, key in (("body recall", "recall_body"), ("context labelled object", "fp_context"),
                        ("distractor labelled object", "fp_distractor"))
      for k in ("proto", "cpmc")),
    ("CPMC mIoU, ground-truth-free decision", lambda m: _get(m, "cams.cpmc.gt_free.miou")),
    ("pseudo labels + CRF (labelled pixels)", lambda m: _get(m, f"pseudo.{_method(m)}_crf.miou")),
    ("network on pseudo labels", lambda m: _get(m, "seg.wsss.miou")),
    ("network on ground truth", lambda m: _get(m, "seg.full.miou")),
    ("weak / full (%)", lambda m: None if _get(m, "seg.ratio") is None else 100 * _get(m, "seg.ratio")),
    ("network on pseudo labels + CRF", lambda m: _get(m, "seg.wsss.miou_crf")),
    ("network on ground truth + CRF", lambda m: _get(m, "seg.full.miou_crf")),
    ("weak / full + CRF (%)", lambda m: None if _get(m, "seg.ratio_crf") is None else 100 * _get(m, "seg.ratio_crf")),
]  # fmt: skip


def _method(m: Mapping[str, Any]) -> str:
    """The CAM method a run's pseudo labels came from."""
    return m.get("config", {}).get("pseudo", {}).get("method", "cpmc")


def _diff(m: Mapping[str, Any], a: str, b: str) -> float | None:
    x, y = _get(m, a), _get(m, b)
    return None if x is None or y is None else x - y


def label_zone_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per run (point name -> ``metrics.json``) of a sweep over the pseudo labels' ignore zone
    (``papermill_runs/band.yaml``, whose point names give the band): the labels after the CRF (mIoU on
    their labelled pixels, the share ignored), the network on them and weak / full."""
    rows = []
    for name, m in runs.items():
        method = m.get("config", {}).get("pseudo", {}).get("method", "cpmc")
        crf = m.get("pseudo", {}).get(f"{method}_crf", {})
        rows.append({
            "point": name, "labels + CRF (labelled pixels)": crf.get("miou"), "ignored (%)": 100 * crf.get("ignore_frac", 0.0),
            "network on pseudo labels": _get(m, "seg.wsss.miou"),
            "weak / full (%)": 100 * r if (r := _get(m, "seg.ratio")) is not None else None,
        })  # fmt: skip
    return markdown_table(rows, list(rows[0]) if rows else ["point"])


def spread_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """The headline numbers of several runs of one setting (e.g. classifier seeds): one row per
    number, one column per run, then the mean and the sample standard deviation over the runs
    (NaN with fewer than two). Rows no run has are left out; mIoU and percentages in %."""
    rows = []
    for label, read in _HEADLINES:
        values = {name: read(m) for name, m in runs.items()}
        got = [v for v in values.values() if v is not None]
        if not got:
            continue
        rows.append({"": label, **values, "mean ± sd": _mean_sd(got)})
    return markdown_table(rows, ["", *runs, "mean ± sd"])


# diagnostic codes of the error table: (metrics key, column head)
_ERROR_COLUMNS = [
    ("recall_body", "body"), ("recall_part", "part"), ("recall_atypical", "atypical body"),
    ("fp_context", "context"), ("fp_distractor", "distractor"), ("fp_neutral", "neutral bg"),
]  # fmt: skip


def _trained_labels(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``pseudo`` section of the labels the network on pseudo labels trained on ({} without)."""
    labels = metrics.get("seg", {}).get("wsss", {}).get("labels", f"{_method(metrics)}_crf")
    return metrics.get("pseudo", {}).get(labels, {})


def label_pathologies(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, float] | None]:
    """The label-map pathology measures of a ``metrics.json``: ``pseudo`` (the labels the network
    trained on), ``weak`` and ``full`` (both networks on val); None where the run has none."""
    seg = metrics.get("seg", {})
    return {
        "pseudo": _trained_labels(metrics).get("pathology"),
        "weak": seg.get("wsss", {}).get("pathology"),
        "full": seg.get("full", {}).get("pathology"),
    }


def error_table(
    pseudo: Mapping[str, float] | None, weak: Mapping[str, float] | None, full: Mapping[str, float] | None
) -> str:
    """Which pixels the pseudo labels and both segmentation networks get right, by diagnostic code
    (synthetic benchmark; :class:`~cpmc_lib.diagnostics.LabelPathologyMeter`'s dicts): percent of
    body / part / atypical pixels labelled with their class and percent of context / distractor /
    neutral background pixels labelled object. "" when none is given (real data)."""
    sources = [("pseudo labels (train)", pseudo), ("network on pseudo labels (val)", weak),
               ("network on ground truth (val)", full)]  # fmt: skip
    rows = [
        {"labels": name, **{head: p.get(key) for key, head in _ERROR_COLUMNS}} for name, p in sources if p
    ]
    if not rows:
        return ""
    heads = [h for _, h in _ERROR_COLUMNS]
    return ("*Object pixels labelled with their class (%, higher is better) | background pixels labelled "
            "object (%, lower is better):*\n\n" + markdown_table(rows, ["labels", *heads]))  # fmt: skip


def error_gap(weak: Mapping[str, float] | None, full: Mapping[str, float] | None, top: int = 3) -> str:
    """One sentence naming the (at most ``top``) kinds of pixel on which the network trained on pseudo
    labels loses most to the one trained on ground truth, from the measured numbers ("" without them)."""
    if not weak or not full:
        return ""
    gaps = []  # shortfall in points: object pixels missed, or background labelled object, beyond the ceiling
    for key, head in _ERROR_COLUMNS:
        w, f = weak.get(key), full.get(key)
        if w is None or f is None or math.isnan(w) or math.isnan(f):
            continue
        gaps.append((f - w if key.startswith("recall") else w - f, key, head, w, f))
    gaps.sort(reverse=True)
    parts = [
        f"{head} {'recall' if key.startswith('recall') else 'labelled object'} {w:.1f} % (ceiling {f:.1f} %)"
        for gap, key, head, w, f in gaps[:top] if gap >= 0.5
    ]  # fmt: skip
    if not parts:
        return "On every kind of pixel the network on pseudo labels is within half a point of the one on ground truth."
    return (
        "Where the network on pseudo labels loses most to the one on ground truth: " + "; ".join(parts) + "."
    )


def class_table(
    class_names: Sequence[str],
    pseudo: Mapping[str, Mapping[str, float]] | None,
    weak: Mapping[str, Mapping[str, float]] | None,
    weak_iou: Sequence[float] | None,
    full_iou: Sequence[float] | None,
    groups: Sequence[int | None] | None = None,
) -> str:
    """Per class: how much of its body and atypical body the pseudo labels and the network on them
    label with the class, and the IoU of both networks (synthetic benchmark).

    Args:
        class_names: the K names, background first.
        pseudo, weak: :meth:`~cpmc_lib.diagnostics.LabelPathologyMeter.compute_by_class` dicts of the
            pseudo labels (train) and of the network on them (val); None where missing.
        weak_iou, full_iou: the K per-class IoUs (percent) of both networks on val.
        groups: each class's body group (the card's ``group``; classes of a group share a body).

    Returns:
        A Markdown table with a row per object class, sorted by the IoU the network on pseudo
        labels loses to the one on ground truth, largest first; "" without per-class numbers.
    """
    if not (weak_iou and full_iou):
        return ""
    rows = []
    for c in range(1, len(class_names)):
        lab, net = (pseudo or {}).get(str(c), {}), (weak or {}).get(str(c), {})
        row = {"class": class_names[c]}
        if groups is not None:
            row["body group"] = groups[c]
        row.update({
            "labels: body (ignored)": f"{fmt(lab.get('recall_body'))} ({fmt(lab.get('ignored_body'))})",
            "labels: atypical": lab.get("recall_atypical"),
            "network: body": net.get("recall_body"),
            "network: atypical": net.get("recall_atypical"),
            "IoU: network": weak_iou[c],
            "IoU: ceiling": full_iou[c],
        })  # fmt: skip
        rows.append(row)
    rows.sort(key=lambda r: -_nan_to(_num(r["IoU: ceiling"]) - _num(r["IoU: network"]), -math.inf))
    return markdown_table(rows, list(rows[0]))


def class_gap(
    class_names: Sequence[str], weak_iou: Sequence[float] | None, full_iou: Sequence[float] | None, top: int = 4
) -> str:
    """One sentence: the ``top`` object classes on which the network on pseudo labels loses most IoU to
    the one on ground truth, and what share of the summed IoU gap (all classes and the background)
    they make; from the numbers, "" without them."""
    if not (weak_iou and full_iou) or not len(weak_iou) == len(full_iou) == len(class_names):
        return ""
    gaps = [_nan_to(_num(f) - _num(w), 0.0) for w, f in zip(weak_iou, full_iou, strict=True)]
    total = sum(gaps)
    if total <= 0:
        return "Summed over the classes, the network on pseudo labels loses no IoU to the one on ground truth."
    worst = sorted(range(1, len(gaps)), key=lambda c: -gaps[c])[:top]
    share = 100 * sum(max(gaps[c], 0.0) for c in worst) / total
    return (
        f"{len(worst)} of {len(gaps) - 1} object classes ({', '.join(class_names[c] for c in worst)}) make "
        f"{share:.0f} % of the IoU the network on pseudo labels loses to the one on ground truth, summed over "
        "the classes and the background."
    )


def _nan_to(x: float, value: float) -> float:
    return value if math.isnan(x) else x


def _num(x: float | None) -> float:
    """A missing value (None, as JSON stores it) as NaN."""
    return float("nan") if x is None else float(x)


def metrics_class_table(metrics: Mapping[str, Any]) -> str:
    """:func:`class_gap` and :func:`class_table` of one ``metrics.json`` ("" without the per-class keys)."""
    seg = metrics.get("seg", {})
    weak, full = seg.get("wsss", {}), seg.get("full", {})
    names = metrics.get("dataset", {}).get("class_names", [])
    table = class_table(names, _trained_labels(metrics).get("pathology_by_class"), weak.get("pathology_by_class"),
                        weak.get("iou"), full.get("iou"), body_groups(metrics.get("dataset", {})))  # fmt: skip
    return f"{class_gap(names, weak.get('iou'), full.get('iou'))}\n\n{table}" if table else ""


def body_groups(card: Mapping[str, Any]) -> list[int | None] | None:
    """Each class's body group from a synthetic benchmark's card (None for the background), for
    :func:`class_table`; None for a card without class designs (real data)."""
    classes = card.get("classes")
    if not classes:
        return None
    return [None] + [c.get("group") for c in sorted(classes, key=lambda c: c["id"])]


def class_spread_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Per class over several runs of one benchmark (e.g. training seeds): the IoU the network on
    pseudo labels loses to the one on ground truth in each run, its mean and standard deviation, and
    the mean body recall of the pseudo labels. Rows sorted by the mean loss, largest first.

    Args:
        runs: ``{name: metrics.json dict}``; runs without the per-class keys (older than them) are
            left out.

    Returns:
        A Markdown table, or "" when no run has the per-class keys.
    """
    have = {name: keys for name, m in runs.items() if (keys := _per_class(m))}
    if not have:
        return ""
    first = runs[next(iter(have))]["dataset"]
    names, groups = first["class_names"], body_groups(first)
    rows = []
    for c in range(1, len(names)):
        lost = {n: _num(f[c]) - _num(w[c]) for n, (w, f, _) in have.items()}
        body = [_num(by.get(str(c), {}).get("recall_body")) for _, _, by in have.values()]
        got, body = [v for v in lost.values() if not math.isnan(v)], [v for v in body if not math.isnan(v)]
        row: dict[str, Any] = {"class": names[c]}
        if groups is not None:
            row["body group"] = groups[c]
        row.update({f"IoU lost: {n}": v for n, v in lost.items()})
        row["mean ± sd"] = _mean_sd(got)
        row["labels: body, mean"] = statistics.fmean(body) if body else None
        row["_order"] = statistics.fmean(got) if got else -math.inf
        rows.append(row)
    rows.sort(key=lambda r: -r["_order"])
    return markdown_table(rows, [k for k in rows[0] if k != "_order"])


def _per_class(metrics: Mapping[str, Any]) -> tuple[list, list, Mapping[str, Any]] | None:
    """A run's per-class IoU of both networks and its trained labels' per-class pathology, or None
    for a run older than those keys."""
    seg, labels = metrics.get("seg", {}), _trained_labels(metrics)
    if "iou" in seg.get("wsss", {}) and "iou" in seg.get("full", {}) and "pathology_by_class" in labels:
        return seg["wsss"]["iou"], seg["full"]["iou"], labels["pathology_by_class"]
    return None


def group_loss_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Per run of its own synthetic benchmark (e.g. held-out settings): the IoU the network on pseudo
    labels loses to the one on ground truth, by the size of the classes' body group (range over the
    classes), and the pseudo labels' body recall of each shared body's best-labelled class against
    that of its siblings (mean over groups, resp. siblings).

    Args:
        runs: ``{name: metrics.json dict}``; runs without the per-class keys or the card's class
            designs are left out.

    Returns:
        A Markdown table, or "" when no run qualifies.
    """
    rows = []
    for name, m in runs.items():
        keys, groups = _per_class(m), body_groups(m.get("dataset", {}))
        if not keys or groups is None:
            continue
        weak, full, by_class = keys
        members: dict[Any, list[int]] = {}
        for c in range(1, len(groups)):
            members.setdefault(groups[c], []).append(c)
        row: dict[str, Any] = {"setting": name, "classes": len(groups) - 1}
        for size in sorted({len(g) for g in members.values()}, reverse=True):
            lost = [_num(full[c]) - _num(weak[c]) for g in members.values() if len(g) == size for c in g]
            lost = [v for v in lost if not math.isnan(v)]
            row[f"IoU lost: groups of {size}"] = f"{min(lost):.1f} to {max(lost):.1f}" if lost else None
        best, siblings = [], []
        for g in (g for g in members.values() if len(g) > 1):
            body = sorted(v for c in g if not math.isnan(v := _num(by_class.get(str(c), {}).get("recall_body"))))
            if body:
                best.append(body[-1])
                siblings += body[:-1]
        row["labels: body, best of its group"] = statistics.fmean(best) if best else None
        row["labels: body, its siblings"] = statistics.fmean(siblings) if siblings else None
        rows.append(row)
    if not rows:
        return ""
    sizes = sorted({int(k.rsplit(" ", 1)[1]) for r in rows for k in r if k.startswith("IoU lost")}, reverse=True)
    return markdown_table(rows, ["setting", "classes", *(f"IoU lost: groups of {n}" for n in sizes),
                                 "labels: body, best of its group", "labels: body, its siblings"])  # fmt: skip


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.1f}\u00a0±\u00a0{fmt(sd)}"
