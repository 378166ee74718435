"""The negative prototypes (``pseudo.negatives``) against the default, point by point, from the records.

``papermill_runs/negatives.yaml`` reruns the points of ``robustness.yaml`` (training seeds) and
``heldout.yaml`` (generator settings never tuned on) with the option on; their maps, classifiers and
ceilings are the same stages. This prints, per point, the default's number -> the option's: pseudo
labels with the CRF, their context / distractor labelled object, the network on them, its val context
/ distractor labelled object, and weak / full.

Usage::

    python -m cpmc_lib sweep papermill_runs/negatives.yaml --workers 1 --record  # writes the record
    python benchmarks/negatives_gain.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDS = Path(__file__).resolve().parents[1] / "papermill_runs" / "records"
# negatives.yaml's point -> (record, point) of the default it reruns
PAIRS = {
    "seed-0": ("robustness", "seed-0"), "seed-1": ("robustness", "seed-1"), "seed-2": ("robustness", "seed-2"),
    "heldout-seed-1": ("heldout", "seed-1"), "heldout-seed-2": ("heldout", "seed-2"),
    "classes-15": ("heldout", "classes-15"), "part-0.3": ("heldout", "part-0.3"), "context-0.6": ("heldout", "context-0.6"),
}  # fmt: skip
HEADER = (
    "| point | classes with negatives | labels + CRF | labels: context / distractor labelled object | network "
    "| network: context / distractor labelled object (val) | weak / full (%) |\n|---|---|---|---|---|---|---|"
)


def row(name: str, neg: dict[str, Any], base: dict[str, Any]) -> str:
    """One table row: ``base`` -> ``neg`` (two points' ``metrics.json``)."""
    pn, pb = neg["pseudo"]["cpmc_crf"], base["pseudo"]["cpmc_crf"]
    sn, sb = neg["seg"]["wsss"], base["seg"]["wsss"]

    def fp(m: dict[str, Any]) -> str:
        return f"{m['pathology']['fp_context']:.1f} / {m['pathology']['fp_distractor']:.1f}"

    found = neg["pseudo"].get("negatives")
    classes = "(not recorded)" if found is None else ", ".join(found) if len(found) < 4 else f"{len(found)} classes"
    return (
        f"| {name} | {classes} | {pb['miou']:.1f} -> {pn['miou']:.1f} | {fp(pb)} -> {fp(pn)} | "
        f"{sb['miou']:.1f} -> {sn['miou']:.1f} ({sn['miou'] - sb['miou']:+.1f}) | {fp(sb)} -> {fp(sn)} | "
        f"{100 * base['seg']['ratio']:.1f} -> {100 * neg['seg']['ratio']:.1f} |"
    )


def table(records: Path = RECORDS) -> str:
    """The whole comparison; a point missing from either record is named as missing."""
    load = lambda n: json.loads((records / f"{n}.json").read_text())["points"]  # noqa: E731
    neg, bases = load("negatives"), {n: load(n) for n in {r for r, _ in PAIRS.values()}}
    lines = [HEADER]
    for name, (rec, point) in PAIRS.items():
        if name not in neg or point not in bases[rec]:
            lines.append(f"| {name} | missing from the records |")
        else:
            lines.append(row(name, neg[name]["metrics"], bases[rec][point]["metrics"]))
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
