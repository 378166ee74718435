"""The negative prototypes (``pseudo.negatives``) against the default before them, point by point, from the records.

``papermill_runs/negatives.yaml`` reruns the points of ``robustness.yaml`` (training seeds) and
``validation.yaml`` (the validation generator settings; reading this comparison on them turned the
option on and gave it its guard, ``pseudo.negative_outlier``) with the option on, as it was before
its guard; their maps, classifiers and ceilings are the same stages. This prints, per point, the
previous default's number -> the option's: pseudo labels with the CRF, their context / distractor
labelled object, the network on them, its val context / distractor labelled object, and weak / full. The previous default (classes by their parts, off negatives) is the records kept in
``papermill_runs/records/parts/``, as they were at ``a2e3af4``; the top-level records now hold the
default with negative prototypes.

``--sweep validation`` (or ``robustness``) compares instead the previous default's record of that
sweep (``parts/heldout.json``: the validation sweep was named ``heldout`` then; or
``parts/robustness.json``) with its top-level record, the current default (negative prototypes with
their guard); its weak / full cell adds the ratio with the dense CRF on both networks where the
point scored it.

Usage::

    python -m cpmc_lib sweep papermill_runs/negatives.yaml --workers 1 --record  # writes the record
    python benchmarks/negatives_gain.py
    python benchmarks/negatives_gain.py --sweep validation  # previous default -> current default
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDS = Path(__file__).resolve().parents[1] / "papermill_runs" / "records"
# negatives.yaml's point -> (record, point) of the previous default it reruns
PAIRS = {
    "seed-0": ("parts/robustness", "seed-0"), "seed-1": ("parts/robustness", "seed-1"),
    "seed-2": ("parts/robustness", "seed-2"), "validation-seed-1": ("parts/heldout", "seed-1"),
    "validation-seed-2": ("parts/heldout", "seed-2"), "classes-15": ("parts/heldout", "classes-15"),
    "part-0.3": ("parts/heldout", "part-0.3"), "context-0.6": ("parts/heldout", "context-0.6"),
}  # fmt: skip
# a sweep -> its previous default's record (the validation sweep was named heldout then)
PREVIOUS = {"validation": "parts/heldout", "robustness": "parts/robustness"}
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

    crf = f" (with CRF {100 * neg['seg']['ratio_crf']:.1f})" if "ratio_crf" in neg["seg"] else ""
    found = neg["pseudo"].get("negatives")
    classes = "(not recorded)" if found is None else ", ".join(found) if len(found) < 4 else f"{len(found)} classes"
    return (
        f"| {name} | {classes} | {pb['miou']:.1f} -> {pn['miou']:.1f} | {fp(pb)} -> {fp(pn)} | "
        f"{sb['miou']:.1f} -> {sn['miou']:.1f} ({sn['miou'] - sb['miou']:+.1f}) | {fp(sb)} -> {fp(sn)} | "
        f"{100 * base['seg']['ratio']:.1f} -> {100 * neg['seg']['ratio']:.1f}{crf} |"
    )


def table(records: Path = RECORDS, sweep: str | None = None) -> str:
    """The whole comparison; a point missing from either record is named as missing. ``sweep``:
    that sweep's previous-default record against its current one, point by point."""
    load = lambda n: json.loads((records / f"{n}.json").read_text())["points"]  # noqa: E731
    pairs = PAIRS if sweep is None else {p: (PREVIOUS[sweep], p) for p in load(PREVIOUS[sweep])}
    neg = load("negatives" if sweep is None else sweep)
    bases = {n: load(n) for n in {r for r, _ in pairs.values()}}
    lines = [HEADER]
    for name, (rec, point) in pairs.items():
        if name not in neg or point not in bases[rec]:
            lines.append(f"| {name} | missing from the records |")
        else:
            lines.append(row(name, neg[name]["metrics"], bases[rec][point]["metrics"]))
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", choices=tuple(PREVIOUS), help="previous default -> current default")
    print(table(sweep=ap.parse_args().sweep))
