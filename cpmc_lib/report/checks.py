"""What a pipeline run shows: the landing page's headline, and CPMC's promises (issue 16) checked on
one run or tabulated over several."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .labels import scored_labels
from .maps import CAM_NAMES
from .text import delta, markdown_table

__all__ = ["ceiling_moved", "family_limits", "headline", "limits", "promise_summary", "promise_table", "promises"]


def ceiling_moved(curve: Sequence[float]) -> float:
    """How far a learning curve (val mIoU of consecutive epochs up to the last, at least 3) moved
    over its last two epochs: the convergence reading is |moved| < 0.5."""
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
        if r.get("ignore_frac"):  # scored on the labelled pixels only: the coverage beside it
            what += f" ({100 * r['ignore_frac']:.1f} % ignored"
            if r.get("miou_bg") is not None:
                what += f"; {r['miou_bg']:.1f} with them as background"
            what += ")"
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
        free = [(cams[k].get("gt_free") or {}).get("miou") for k in ("cam", "proto", "cpmc")]
        if None not in free:  # the claim at the pipeline's own operating point, the oracle view beside it
            lines.append(f"- Cut where the pipeline cuts it (ground-truth-free), CPMC scores {delta(free[0], free[2])} "
                         f"mIoU over the classifier CAM and {delta(free[1], free[2])} over the prototype CAM it "
                         f"calibrates; each at its oracle threshold, {delta(cam, cpmc)} and {delta(proto, cpmc)}.")  # fmt: skip
        else:
            lines.append(f"- At each map's oracle threshold, CPMC scores {delta(cam, cpmc)} mIoU over the classifier "
                         f"CAM and {delta(proto, cpmc)} over the prototype CAM it calibrates.")  # fmt: skip
    crf = [k for k in pseudo if k.endswith("_crf") and k.removesuffix("_crf") in pseudo]
    for k in crf:
        change = delta(pseudo[k.removesuffix("_crf")]["miou"], pseudo[k]["miou"])
        zone = pseudo[k].get("ignore_frac") or pseudo[k.removesuffix("_crf")].get("ignore_frac")
        lines.append(f"- The dense CRF changes {k.removesuffix('_crf')} pseudo-label mIoU by {change}"
                     + (" (each scored on its own labelled pixels)." if zone else "."))  # fmt: skip
    if seg and len(c := seg["full"].get("curve", [])) >= 3:
        verdict = "converged by the < 0.5 reading" if abs(ceiling_moved(c)) < 0.5 else "still moving: an unfinished ceiling"
        lines.append(f"- The ground-truth ceiling's val mIoU moved {delta(c[-3], c[-1])} over its last two epochs "
                     f"of {seg['full'].get('curve_epochs', [len(c)])[-1]}, {verdict} (its learning curve is in chapter 8).")  # fmt: skip
    if seg and "ratio_crf" in seg:
        lines.append(f"- Weak supervision reaches {100 * seg['ratio']:.1f} % of full supervision, "
                     f"{100 * seg['ratio_crf']:.1f} % with the dense CRF on both networks, the field's protocol; "
                     "ratios of this synthetic benchmark, not comparable with the papers' ratios on PASCAL VOC.")  # fmt: skip
    elif seg:
        lines.append(f"- Weak supervision reaches {100 * seg['ratio']:.1f} % of full supervision on this synthetic "
                     "benchmark (not comparable with the papers' ratios on PASCAL VOC).")  # fmt: skip
    return "\n".join(lines)


def promises(metrics: Mapping[str, Any], view: str = "gt_free") -> list[dict[str, Any]]:
    """CPMC's promises checked on one pipeline ``metrics.json``, at the pipeline's own operating point.

    Every map claim reads the maps as the pseudo labels cut them (``cams.<m>.gt_free``: the
    background decision that reads no ground truth), never at the oracle best threshold; one more
    claim says what that decision costs against the oracle threshold (within 1 point). A run
    without the ground-truth-free scores (an older record) gets no map claims. ``view="oracle"``
    reads each map at its best threshold instead (a search over settings that has only that view,
    ``benchmarks/tune_over_seeds.py``, says so where it prints).

    Returns:
        One dict per claim the run has reached: ``claim`` (short name), ``holds``, ``margin``
        (by how much it holds, > 0, or fails, < 0, in the claim's own unit; None for yes/no
        claims) and ``detail`` (the sentence with its numbers).
    """
    out: list[dict[str, Any]] = []

    def add(claim: str, margin: float | None, detail: str, holds: bool | None = None, failed: str = "") -> None:
        ok = bool(margin >= 0) if holds is None else holds
        if not ok:  # the sentence states what was measured: a failed "a >= b" reads "a < b"
            flipped = detail.replace(" >= ", " < ", 1) if " >= " in detail else detail.replace(" <= ", " > ", 1)
            detail = failed or flipped
        out.append({"claim": claim, "holds": ok, "margin": margin, "detail": detail})

    c = metrics.get("cams", {})
    if view not in ("gt_free", "oracle"):
        raise ValueError(f"view {view!r}: 'gt_free' (the pipeline's decision) or 'oracle' (best threshold)")
    maps = ("cam", "proto", "cpmc")
    free = {k: (c.get(k) or {}).get("gt_free") if view == "gt_free" else c.get(k) for k in maps}
    if all(free.values()):
        cam, proto, cpmc = (free[k]["miou"] for k in maps)
        at = "at the ground-truth-free decision" if view == "gt_free" else "oracle view: each map's best threshold"
        add("CAM < proto < CPMC", min(proto - cam, cpmc - proto),
            f"ordering {at}: CAM {cam:.1f} < prototype CAM {proto:.1f} < CPMC {cpmc:.1f}", holds=cam < proto < cpmc,
            failed=f"ordering {at}: CAM {cam:.1f}, prototype CAM {proto:.1f}, CPMC {cpmc:.1f}, not in that order")  # fmt: skip
        add("CPMC >= CAM + 10", cpmc - cam - 10, f"CPMC {cpmc:.1f} >= CAM {cam:.1f} + 10 ({at})")
        add("CPMC >= proto + 3", cpmc - proto - 3, f"CPMC {cpmc:.1f} >= prototype CAM {proto:.1f} + 3 ({at})")
        oracle = c["cpmc"]["miou"]
        if view == "gt_free":
            add("GT-free cut within 1", 1 - (oracle - cpmc),
                f"CPMC {at} {cpmc:.1f} within 1 point of its oracle best threshold's {oracle:.1f}",
                failed=f"CPMC {at} {cpmc:.1f}, {oracle - cpmc:.1f} points below its oracle best threshold's {oracle:.1f}")  # fmt: skip
        pp, cp = free["proto"].get("pathology") or {}, free["cpmc"].get("pathology") or {}
        if pp and cp:
            add("body recall >= proto + 5", cp["recall_body"] - pp["recall_body"] - 5,
                f"body recall {cp['recall_body']:.1f} >= prototype CAM's {pp['recall_body']:.1f} + 5 ({at})")  # fmt: skip
            for key, name in (("fp_context", "context"), ("fp_distractor", "distractor")):
                add(f"{name} FP <= proto", pp[key] - cp[key],
                    f"{name} labelled object {cp[key]:.1f} <= prototype CAM's {pp[key]:.1f} ({at})")  # fmt: skip
    rule = metrics.get("pseudo", {}).get("threshold_rule")
    if rule is not None:
        add("GT-free pseudo labels", None, f"pseudo-label rule {rule!r} reads no ground truth", holds=rule != "oracle",
            failed=f"pseudo-label rule {rule!r} reads the ground truth")  # fmt: skip
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
        add("ceiling converged", 0.5 - abs(moved), f"ceiling moved {moved:+.2f} over its last two epochs (< 0.5)",
            failed=f"ceiling moved {moved:+.2f} over its last two epochs (not < 0.5)")
    return out


# column heads of promise_table (the claims' names are too long for 10 columns in the book)
_SHORT = {
    "CAM < proto < CPMC": "order", "CPMC >= CAM + 10": "CAM + 10", "CPMC >= proto + 3": "proto + 3",
    "body recall >= proto + 5": "body + 5", "context FP <= proto": "context FP", "distractor FP <= proto": "distr. FP",
    "GT-free pseudo labels": "GT-free", "weak/full >= 0.88": "weak/full", "ceiling converged": "converged",
    "GT-free cut within 1": "cut cost",
}  # fmt: skip


def _margin(x: float) -> str:
    """A promise's margin: one decimal, two where one would read as zero (a failure of -0.03 is not -0.0)."""
    return f"{x:+.2f}" if abs(x) < 0.05 else f"{x:+.1f}"


def _mark(p: Mapping[str, Any]) -> str:
    sign = "✓" if p["holds"] else "✗"
    return sign if p["margin"] is None else f"{sign}\u00a0{_margin(p['margin'])}"  # no break inside a cell


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


def _by_claim(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each promise's checks over the runs (setting name -> ``metrics.json``): claim -> [(run, check)]."""
    by_claim: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, m in runs.items():
        for p in promises(m):
            by_claim.setdefault(p["claim"], []).append((name, p))
    return by_claim


def promise_summary(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown bullet per promise: on how many runs it holds, and where and by how much it fails."""
    lines = []
    for claim, results in _by_claim(runs).items():
        fails = [(n, p) for n, p in results if not p["holds"]]
        text = f"- **{claim}** holds on {len(results) - len(fails)} of {len(results)}"
        if fails:
            text += "; fails on " + ", ".join(
                n if p["margin"] is None else f"{n} ({_margin(p['margin'])})" for n, p in fails
            )
        lines.append(text + ".")
    return "\n".join(lines)


def limits(metrics: Mapping[str, Any], test_runs: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The landing page's box of limits, as a MyST admonition: what is CPMC and what was added, the
    promises that fail on this run at its ground-truth-free operating point (read from ``metrics``)
    and, given the test family's default runs (``test_runs``), those that fail on some of them
    (:func:`family_limits`), that the benchmark is synthetic, and which setting the numbers come from."""
    from ..components import COMPONENTS

    added = [c.name for c in COMPONENTS if c.origin in ("book", "reconstruction") and c.variant != "paper"]
    fails = [p for p in promises(metrics) if not p["holds"]]
    failing = "\n".join(f"  - **{p['claim']}** fails" + ("" if p["margin"] is None else f" ({p['margin']:+.1f})")
                        + f": {p['detail']}" for p in fails) or "  - none: every promise holds on this run."  # fmt: skip
    return "\n".join([
        ":::{admonition} Before you read the numbers",
        ":class: important",
        "- **CPMC and what this book added.** The paper's steps (classifier CAM, context refinement, prototype "
        "CAM, FN and FP local prototypes) are reconstructed from its abstract and its lineage; the default "
        f"also holds {len(added)} parts the paper does not give ({', '.join(added)}). The table "
        "\"What CPMC does, and what this book added\" below labels every part and gives each one's gain.",
        "- **Where the promises do not hold on this run**, read at the pipeline's own ground-truth-free "
        "operating point:",
        failing,
        *(["- **Where they do not hold on the test family** (settings no choice has seen, at the same "
           "operating point; chapter 9 gives every run):", family] if (family := family_limits(test_runs or {})) else []),
        "- **Synthetic, not PASCAL VOC.** Every number here is of the embedded synthetic benchmark; its "
        "weak / full ratio is not comparable with the ratios the papers report on VOC.",
        "- **The tuning setting.** This run is generator seed 0 with training seed "
        f"{metrics.get('config', {}).get('seed', 0)}, the setting every default was chosen on; chapter 9 "
        "gives the spread over training seeds and the validation and test families.",
        ":::",
    ])  # fmt: skip


def family_limits(runs: Mapping[str, Mapping[str, Any]], family: str = "test family") -> str:
    """The promises that fail on some run of a family (setting name -> ``metrics.json``), one bullet
    each: on how many runs it holds, and the run where it fails by most; "" when every one holds."""
    lines = []
    for claim, results in _by_claim(runs).items():
        fails = [(n, p) for n, p in results if not p["holds"]]
        if fails:
            n, p = min(fails, key=lambda f: f[1]["margin"] if f[1]["margin"] is not None else 0.0)
            worst = "" if p["margin"] is None else f"; by most on {n} ({_margin(p['margin'])})"
            lines.append(f"  - **{claim}** holds on {len(results) - len(fails)} of {len(results)} runs of the {family}{worst}")
    return "\n".join(lines)
