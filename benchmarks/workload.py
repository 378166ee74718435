"""The default workload's record: what a cut of the default's size cost in each number, and the time it saved.

Reads two pipeline ``metrics.json`` of the tuning setting (generator seed 0, training seed 0): the
run before the cut and the run after it, each made from scratch on idle CPU cores (so their
``stage_seconds`` are the stages' times). Writes ``papermill_runs/records/workload.json`` with, for
each headline number, both values and their difference, the config keys that differ, and each
stage's seconds; the method page renders it beside the ledger (``{workload}``).

Usage::

    python benchmarks/workload.py before/runs/default/metrics.json runs/default/metrics.json \\
        --book-seconds 840 --out papermill_runs/records/workload.json
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from cpmc_lib.io import load_json, save_json
from cpmc_lib.report import ceiling_moved

# (label, dotted path into metrics.json): the numbers a cut of the workload may cost
NUMBERS = (
    ("classifier val mAP", "classifier.val_mAP"),
    *((f"{m} CAM mIoU, oracle threshold", f"cams.{m}.miou") for m in ("cam", "refined", "proto", "cpmc")),
    *((f"{m} CAM mIoU, ground-truth-free cut", f"cams.{m}.gt_free.miou") for m in ("cam", "refined", "proto", "cpmc")),
    ("CPMC body recall, ground-truth-free cut", "cams.cpmc.gt_free.pathology.recall_body"),
    ("pseudo labels + CRF mIoU", "pseudo.cpmc_crf.miou"),
    ("pseudo labels ignored (%)", "pseudo.cpmc_crf.ignore_frac"),
    ("pseudo labels + CRF mIoU, ignored as background", "pseudo.cpmc_crf.miou_bg"),
    ("network on pseudo labels, val mIoU", "seg.wsss.miou"),
    ("network on pseudo labels + test CRF", "seg.wsss.miou_crf"),
    ("network on ground truth (ceiling)", "seg.full.miou"),
    ("ceiling + test CRF", "seg.full.miou_crf"),
    ("weak / full", "seg.ratio"),
    ("weak / full, both with the test CRF", "seg.ratio_crf"),
)


def _get(metrics: dict[str, Any], path: str) -> Any:
    x: Any = metrics
    for part in path.split("."):
        if not isinstance(x, dict) or part not in x:
            return None
        x = x[part]
    return 100 * x if path.endswith("ignore_frac") and x is not None else x


def _changed(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """Config keys whose values differ: ``{key: [before, after]}`` (the run name left out)."""
    out: dict[str, list[Any]] = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        path = f"{prefix}{key}"
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(_changed(x, y, f"{path}."))
        elif x != y and path not in ("run", "data.root"):
            out[path] = [x, y]
    return out


def partial_run(folder: str | Path, before: dict[str, Any]) -> dict[str, Any]:
    """A cut tried and stopped before its networks: the numbers its run folder holds (classifier,
    maps at the oracle threshold, pseudo labels) and the config keys it changed against ``before``."""
    folder = Path(folder)
    cls = load_json(folder / "classifier" / "manifest.json")
    out: dict[str, Any] = {"changed": _changed(before["config"], cls["config"]), "numbers": {}}
    out["numbers"]["classifier.val_mAP"] = cls["result"]["val_mAP"]
    for m in ("cam", "refined", "proto", "cpmc"):
        if (folder / "cams" / m / "metrics.json").is_file():
            out["numbers"][f"cams.{m}.miou"] = load_json(folder / "cams" / m / "metrics.json")["miou"]
    if (folder / "pseudo" / "manifest.json").is_file():
        r = load_json(folder / "pseudo" / "manifest.json")["result"]
        out["numbers"].update({"pseudo.cpmc_crf.miou": r["miou_crf"], "pseudo.cpmc_crf.ignore_frac": 100 * r["ignore_frac_crf"],
                               "pseudo.cpmc_crf.miou_bg": r["miou_bg_crf"]})  # fmt: skip
    return out


def workload_record(before: dict[str, Any], after: dict[str, Any], book_seconds: float | None) -> dict[str, Any]:
    """The record: changed keys, each number before and after, the ceiling's last move, stage seconds."""
    rows = []
    for label, path in NUMBERS:
        x, y = _get(before, path), _get(after, path)
        rows.append({"number": label, "path": path, "before": x, "after": y,
                     "change": None if x is None or y is None else y - x})  # fmt: skip
    moved = {k: ceiling_moved(m["seg"]["full"].get("curve", [])) for k, m in (("before", before), ("after", after))}
    return {
        "changed": _changed(before["config"], after["config"]),
        "numbers": rows,
        "ceiling_moved": moved,
        "stage_seconds": {"before": before["stage_seconds"], "after": after["stage_seconds"]},
        "pipeline_seconds": {k: round(sum(m["stage_seconds"].values()), 1) for k, m in (("before", before), ("after", after))},
        "book_seconds": book_seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--book-seconds", type=float, default=None, help="the timed `make book` after install, if measured")
    ap.add_argument("--tried", action="append", default=[], help="the run folder of a cut tried and stopped early")
    ap.add_argument("--runs", default="", help="where the two runs were made (commits, commands): kept in the record")
    ap.add_argument("--out", default="papermill_runs/records/workload.json")
    args = ap.parse_args()
    before = load_json(args.before)
    record = workload_record(before, load_json(args.after), args.book_seconds)
    record["tried"] = [partial_run(f, before) for f in args.tried]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # the command with the run files named by role (their paths are of the machine that made them)
    command = ["python benchmarks/workload.py BEFORE/metrics.json AFTER/metrics.json",
               *(["--book-seconds", f"{args.book_seconds:g}"] if args.book_seconds else []), *(["--tried TRIED_RUN"] * len(args.tried))]  # fmt: skip
    record["made_by"] = {"command": " ".join(command), "commit": commit, "runs": args.runs}
    save_json(args.out, record)
    for r in record["numbers"]:
        if r["change"] is not None:
            print(f"{r['number']:>50}: {r['before']:7.2f} -> {r['after']:7.2f} ({r['change']:+.2f})")
    print("changed:", record["changed"])
    print("pipeline seconds:", record["pipeline_seconds"], "ceiling moved:", record["ceiling_moved"])


if __name__ == "__main__":
    main()
