"""Print the README's result table of a pipeline ``metrics.json`` and check CPMC's promises on it.

The README quotes numbers only from runs; this script turns a run's ``metrics.json`` (written by
``make book`` or ``python -m cpmc_lib pipeline``) into the table the README shows, so the table is
regenerated, never typed. Then one line per promise of issue 16, each PASS or FAIL with its numbers:
CPMC >= classifier CAM + 10 and >= prototype CAM + 3, body recall >= the prototype
CAM's + 5, context and distractor labelled object <= the prototype CAM's (every map at the pipeline's
ground-truth-free decision), that decision within 1 point of the oracle threshold, a pseudo-label rule that
reads no ground truth, weak / full >= 0.88, and a ceiling whose val mIoU moved less than 0.5 over
its last two epochs.

With ``--sweep validation`` it prints the same promises for every point of a pipeline sweep, as
chapter 9 shows them: from the sweep's output when it ran here, else from its committed record
(``papermill_runs/records/<sweep>.json``), with the commits the record's stages ran at; ``--spread``
adds every headline number per point with its mean and standard deviation (the robustness sweep),
and per class the IoU the network on pseudo labels loses to the ceiling.
On the synthetic benchmark it also prints which kinds of pixel the pseudo labels and both
segmentation networks get wrong (where weak supervision loses to full), pooled and per class.

Usage::

    python benchmarks/summarize_metrics.py runs/default/metrics.json [more metrics.json ...]
    python benchmarks/summarize_metrics.py --sweep validation [runs/default/metrics.json]
    python benchmarks/summarize_metrics.py --sweep robustness --spread
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cpmc_lib import report, sweep

ROWS = (("cam", "classifier CAM"), ("refined", "+ context refinement"), ("proto", "prototype CAM"),
        ("cpmc", "**CPMC**"))  # fmt: skip


def table(m: dict[str, Any]) -> str:
    """The per-map Markdown table: oracle and GT-free mIoU, recalls, labelled-object shares."""
    head = (
        "| map | mIoU, oracle (thr) | mIoU, GT-free | body recall | atypical recall | context labelled object"
        " | distractor labelled object | same, GT-free (context / distractor) |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    cams = m["cams"]
    for key, name in ROWS:
        if key not in cams:
            continue
        r, p = cams[key], cams[key]["pathology"]
        g = r.get("gt_free", {})
        gp = g.get("pathology", {})
        free = f"{g['miou']:.1f}" if "miou" in g else ""
        free_fp = f"{gp['fp_context']:.1f} / {gp['fp_distractor']:.1f}" if gp else ""
        lines.append(
            f"| {name} | {r['miou']:.1f} ({r['threshold']:.2f}) | {free} | {p['recall_body']:.1f} | "
            f"{p['recall_atypical']:.1f} | {p['fp_context']:.1f} | {p['fp_distractor']:.1f} | {free_fp} |"
        )
    peers = [k for k in ("gradcam", "gradcampp", "layercam") if k in cams]
    if peers:
        lines.append(
            "| Grad-CAM / Grad-CAM++ / LayerCAM | "
            + " / ".join(f"{cams[k]['miou']:.1f}" for k in peers)
            + " | | | | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("metrics", nargs="*", help="metrics.json files of pipeline runs")
    ap.add_argument("--sweep", help="a pipeline sweep's points instead (e.g. validation): its output, else its record")
    ap.add_argument("--spread", action="store_true", help="with --sweep: each headline number per point, mean ± sd")
    args = ap.parse_args()
    if args.sweep:  # metrics files given too: their rows first, named by run folder (e.g. the tuning run)
        runs = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in args.metrics}
        points, source = sweep.sweep_runs(args.sweep)
        runs.update(points)
        print(f"## sweep {args.sweep}: {source}\n\n{report.settings_tables(runs)}\n")
        if args.spread:
            print(f"{report.spread_table(runs)}\n")
            by_class = report.class_spread_table(runs)
            if by_class:  # points with the per-class keys (synthetic benchmark)
                print(f"*IoU the network on pseudo labels loses to the ceiling, per class:*\n\n{by_class}\n")
        by_group = report.group_loss_table(runs)
        if by_group:  # points with the per-class keys (synthetic benchmark)
            print(f"*IoU the network on pseudo labels loses to the ceiling, by body group:*\n\n{by_group}\n")
        print(f"{report.promise_table(runs)}\n\n{report.promise_summary(runs)}")
        return
    for path in args.metrics:
        m = json.loads(Path(path).read_text())
        print(f"## {path}\n\n{table(m)}\n")
        ps = m.get("pseudo", {})
        method = m.get("config", {}).get("pseudo", {}).get("method", "cpmc")
        if method in ps:
            crf = ps.get(method + "_crf", {})
            ignored = f" ({100 * crf['ignore_frac']:.1f} % of pixels ignored)" if crf.get("ignore_frac") else ""
            print(f"pseudo labels ({method}, rule {ps.get('threshold_rule')}): {ps[method]['miou']:.1f} mIoU, "
                  f"{crf.get('miou', float('nan')):.1f} with the CRF{ignored}")  # fmt: skip
            if line := report.negatives_line(ps):  # pseudo.negatives
                print(line)
        seg = m.get("seg", {})
        for k in ("wsss", "full"):
            if k in seg:
                curve = " -> ".join(f"{v:.1f}" for v in seg[k].get("curve", []))
                crf = f", {seg[k]['miou_crf']:.1f} with the dense CRF" if "miou_crf" in seg[k] else ""
                print(f"segmentation {k}: {seg[k]['miou']:.1f} val mIoU{crf} (curve {curve})")
        if "ratio" in seg:
            crf = f"; with the dense CRF on both networks {100 * seg['ratio_crf']:.1f} %" if "ratio_crf" in seg else ""
            print(f"weak / full: {100 * seg['ratio']:.1f} %{crf}")
        found = report.label_pathologies(m)
        if found["weak"] and found["full"]:
            print(f"\n{report.error_table(**found)}\n\n{report.error_gap(found['weak'], found['full'])}")
        by_class = report.metrics_class_table(m)
        if by_class:
            print(f"\n{by_class}")
        clf = m.get("classifier", {})
        if "val_mAP" in clf:
            print(f"classifier val mAP {clf['val_mAP']:.1f}, F1 {clf.get('val_F1', float('nan')):.1f}")
        print()
        for p in report.promises(m):
            print(f"{'PASS' if p['holds'] else 'FAIL'}  {p['detail']}")
        print()


if __name__ == "__main__":
    main()
