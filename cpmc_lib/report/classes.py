"""Where the network on pseudo labels loses to the one on ground truth: by kind of pixel (diagnostic
codes) and by class."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .labels import _trained_labels
from .text import _nan_to, _num, fmt, markdown_table

__all__ = ["body_groups", "class_gap", "class_table", "error_gap", "error_table", "metrics_class_table"]


# diagnostic codes of the error table: (metrics key, column head)
_ERROR_COLUMNS = [
    ("recall_body", "body"), ("recall_part", "part"), ("recall_atypical", "atypical body"),
    ("fp_context", "context"), ("fp_distractor", "distractor"), ("fp_neutral", "neutral bg"),
]  # fmt: skip


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
