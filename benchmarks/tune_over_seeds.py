"""Which CPMC settings keep issue 16's map promises on every training seed, not only on one.

``benchmarks/tune_cpmc.py --out`` writes one grid's rows for one classifier. Run it once per
training seed of the tuning data (the robustness sweep's classifiers), then give this script the
files: for every CPMC setting of the grid it checks the map promises of
:func:`cpmc_lib.report.promises` against the same file's classifier-CAM and prototype-CAM rows
(ordering, CPMC >= CAM + 10 and >= prototype CAM + 3, body recall >= the prototype CAM's + 5,
context and distractor labelled object <= the prototype CAM's) and prints, per setting, the mean
and spread of its mIoU and for each promise on how many seeds it holds, with the worst margin.

The selection rule reads only the tuning data's training seeds: the highest mean mIoU among the
settings that keep every promise on every seed; when none does, the settings that keep the most
promise-seed pairs. The validation and test generator settings are never given to it.

Usage::

    for s in 0 1 2; do
      python benchmarks/tune_cpmc.py --run robustness-seed-$s --set seed=$s --grid fpfn --limit 600 \\
        --out fpfn_s$s.json
    done
    python benchmarks/tune_over_seeds.py fpfn_s0.json fpfn_s1.json fpfn_s2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cpmc_lib import report

# the grid rows the promises compare against: (map, setting) of the classifier CAM and prototype CAM
REFERENCES = {"cam": ("cam", "classifier CAM"), "proto": ("proto", "base")}


def as_cams(row: Mapping[str, Any]) -> dict[str, Any]:
    """A tune_cpmc row in the shape of ``metrics.json``'s ``cams.<map>`` (what promises read)."""
    return {
        "miou": row["miou"],
        "threshold": row["thr"],
        "pathology": {"recall_body": row["body"], "fp_context": row["fp_ctx"], "fp_distractor": row["dist"]},
    }


def seed_promises(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per CPMC setting of one seed's grid: claim -> :func:`report.promises` entry."""
    ref = {}
    for key, (which, name) in REFERENCES.items():
        found = [r for r in rows if r["map"] == which and r["setting"] == name]
        if not found:
            raise ValueError(
                f"the grid has no {which!r} row named {name!r}; rerun tune_cpmc.py with --grid fpfn"
            )
        ref[key] = as_cams(found[0])
    out = {}
    for r in rows:
        if r["map"] == "cpmc":
            checked = report.promises({"cams": {**ref, "cpmc": as_cams(r)}}, view="oracle")  # the grid has no other view
            out[r["setting"]] = {p["claim"]: p for p in checked}
    return out


def summarize(grids: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One dict per CPMC setting present in every grid: ``setting``, ``miou`` (per seed), ``mean``,
    ``sd``, ``claims`` (claim -> (seeds holding, worst margin)) and ``kept`` (promise-seed pairs held)."""
    checks = [seed_promises(rows) for rows in grids]
    miou = [{r["setting"]: r["miou"] for r in rows if r["map"] == "cpmc"} for rows in grids]
    out = []
    for setting in checks[0]:
        if not all(setting in c for c in checks):
            continue
        per_seed = [m[setting] for m in miou]
        claims = {}
        for claim in checks[0][setting]:
            ps = [c[setting][claim] for c in checks]
            margins = [p["margin"] for p in ps if p["margin"] is not None]
            claims[claim] = (sum(p["holds"] for p in ps), min(margins) if margins else None)
        out.append(
            {
                "setting": setting,
                "miou": per_seed,
                "mean": statistics.fmean(per_seed),
                "sd": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
                "claims": claims,
                "kept": sum(n for n, _ in claims.values()),
            }
        )
    return out


def select(summary: Sequence[Mapping[str, Any]], seeds: int) -> tuple[list[Mapping[str, Any]], bool]:
    """The settings the rule picks, and whether they keep every promise on every seed."""
    full = [s for s in summary if all(n == seeds for n, _ in s["claims"].values())]
    if full:
        return [max(full, key=lambda s: s["mean"])], True
    best = max(s["kept"] for s in summary)
    return sorted((s for s in summary if s["kept"] == best), key=lambda s: -s["mean"]), False


def markdown(summary: Sequence[Mapping[str, Any]], seeds: int) -> str:
    """The table: setting, mIoU per seed, mean ± sd, then per promise "held / seeds (worst margin)"."""
    claims = list(summary[0]["claims"]) if summary else []
    head = ["setting", *(f"seed {i}" for i in range(seeds)), "mean ± sd", *claims]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sorted(summary, key=lambda s: (-s["kept"], -s["mean"])):
        cells = [s["setting"], *(f"{v:.1f}" for v in s["miou"]), f"{s['mean']:.1f} ± {s['sd']:.1f}"]
        for claim in claims:
            n, worst = s["claims"][claim]
            cells.append(f"{n}/{seeds}" + ("" if worst is None else f" ({worst:+.1f})"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grids", nargs="+", type=Path, help="tune_cpmc.py --out files, one per training seed")
    args = ap.parse_args()
    grids = [json.loads(p.read_text()) for p in args.grids]
    summary = summarize(grids)
    print(markdown(summary, len(grids)))
    chosen, every = select(summary, len(grids))
    what = (
        "keeps every promise on every seed" if every else "keeps the most promise-seed pairs (none keeps all)"
    )
    print(f"\nselected ({what}, then highest mean mIoU): " + "; ".join(s["setting"] for s in chosen))


if __name__ == "__main__":
    main()
