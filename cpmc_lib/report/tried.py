"""What else was tried: the options that left the library, and their last measurements, from their records.

Each retired option left the library with its last measurement, a record made by the code that still
had it (``papermill_runs/records/retired.json``: the tuning seed through segmentation, one point per
option beside the default it was compared with; ``retired_gap.json``: two label rules of
``benchmarks/weak_full_gap.py``). The verdicts are read from the records' numbers: a change of the
network within how far the default's own network moved over its last epoch counts as no evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .text import _effect, _get, delta, fmt, markdown_table

__all__ = ["retired_gap_table", "retired_table"]


def _noise(metrics: Mapping[str, Any]) -> float:
    """How far the network on pseudo labels moved over its last epoch (0 without a learning curve)."""
    curve = (metrics.get("seg", {}).get("wsss", {}) or {}).get("curve") or []
    return abs(curve[-1] - curve[-2]) if len(curve) >= 2 else 0.0


def _verdict(change: float, noise: float) -> str:
    """:func:`~cpmc_lib.report.text._effect` with the default network's last-epoch move as the tolerance."""
    return f"{_effect(change, noise)}; the default's network moved {noise:.1f} over its last epoch"


def retired_table(record: Mapping[str, Any], baseline: str = "default") -> str:
    """The retired options of a record (:func:`cpmc_lib.sweep.write_record`) beside its ``baseline``
    point: a Markdown table of the CPMC map (oracle view), the pseudo labels after the CRF with their
    ignored share, and the network on them (as predicted and after the dense CRF), then one line per
    option saying what the network gained or lost.

    Example:
        >>> m = lambda net: {"cams": {"cpmc": {"miou": 70.0}}, "seg": {"wsss": {"miou": net, "curve": [74.0, 75.0]}}}
        >>> rec = {"points": {"default": {"overrides": [], "metrics": m(75.0)},
        ...                   "erasing": {"overrides": ["classifier.erase_weight=1.0"], "metrics": m(72.3)}}}
        >>> print(retired_table(rec).splitlines()[-1])
        - `erasing` (classifier.erase_weight=1.0), the network on its pseudo labels: **hurts** (-2.7); the default's network moved 1.0 over its last epoch.
    """
    points = record["points"]
    base = points[baseline]["metrics"]
    method = base.get("config", {}).get("pseudo", {}).get("method", "cpmc")
    rows, lines = [], []
    for name, point in points.items():
        m = point["metrics"]
        labels = (m.get("pseudo", {}) or {}).get(f"{method}_crf", {}) or {}
        rows.append({
            "point": name,
            "setting": ", ".join(point["overrides"]) or "the default",
            "CPMC map": _get(m, "cams.cpmc.miou"),
            "labels + CRF (ignored %)": (f"{fmt(labels.get('miou'))} ({fmt(100 * labels['ignore_frac'])})"
                                         if "ignore_frac" in labels else fmt(labels.get("miou"))),
            "network": _get(m, "seg.wsss.miou"),
            "network + CRF": _get(m, "seg.wsss.miou_crf"),
            "Δ network": delta(_get(base, "seg.wsss.miou"), _get(m, "seg.wsss.miou")) if name != baseline else "",
        })  # fmt: skip
        if name != baseline and _get(m, "seg.wsss.miou") is not None:
            change = round(_get(m, "seg.wsss.miou"), 1) - round(_get(base, "seg.wsss.miou"), 1)
            lines.append(f"- `{name}` ({', '.join(point['overrides'])}), the network on its pseudo labels: "
                         f"{_verdict(change, _noise(base))}.")  # fmt: skip
    cols = ["point", "setting", "CPMC map", "labels + CRF (ignored %)", "network", "network + CRF", "Δ network"]
    return "\n".join([markdown_table(rows, cols), "", *lines])


def retired_gap_table(record: Mapping[str, Any]) -> str:
    """The label rules of ``benchmarks/weak_full_gap.py`` that were retired (CRF agreement,
    self-training): their labels and the network trained on them, beside the stage's network."""
    base = record["stage_network"]["val_miou"]
    curve = record["stage_network"].get("curve") or []
    noise = abs(curve[-1] - curve[-2]) if len(curve) >= 2 else 0.0
    rows = [{"labels": "the stage's pseudo labels", "network": base, "Δ network": ""}]
    lines = []
    for name, r in record["experiments"].items():
        net = r["network"]["val_miou"]
        labels = r["labels"]
        rows.append({"labels": name, "labels mIoU": labels.get("miou_crf", labels.get("miou")),
                     "network": net, "Δ network": delta(base, net)})  # fmt: skip
        lines.append(f"- {name}, the network on these labels: {_verdict(round(net, 1) - round(base, 1), noise)}.")
    return "\n".join([markdown_table(rows, ["labels", "labels mIoU", "network", "Δ network"]), "", *lines])
