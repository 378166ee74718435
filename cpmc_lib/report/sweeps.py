"""Tables over several runs (the settings of a sweep, the seeds of one setting): the maps and promise
numbers per setting, the headline numbers with their spread, the per-class loss over seeds and by body group."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping
from typing import Any

from ..components import COMPONENTS, ORIGIN_NAMES, Component
from .classes import body_groups
from .labels import _method, _trained_labels
from .maps import CAM_NAMES
from .text import _get, _mean_sd, _num, fmt, markdown_table

__all__ = ["additions_table", "class_spread_table", "component_verdicts", "group_loss_table", "pipelines_table", "settings_tables", "spread_table", "variant_runs"]


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
                     "CPMC thr.": fmt(c.get("cpmc", {}).get("threshold"), 2),
                     "CPMC GT-free": (c.get("cpmc", {}).get("gt_free") or {}).get("miou")})  # fmt: skip
        # the promises at the pipeline's own operating point (the ground-truth-free decision)
        pp, cp = ((c.get(k, {}).get("gt_free") or {}).get("pathology") or {} for k in ("proto", "cpmc"))
        pseudo, seg = m.get("pseudo", {}), m.get("seg", {})
        method = m.get("config", {}).get("pseudo", {}).get("method", "cpmc")
        crf = pseudo.get(f"{method}_crf", {}).get("miou")
        claims.append({
            "setting": name, "body recall": _arrow(pp, cp, "recall_body"), "context FP": _arrow(pp, cp, "fp_context"),
            "distractor FP": _arrow(pp, cp, "fp_distractor"), "pseudo + CRF": crf,
            "ignored (%)": 100 * ignored if (ignored := pseudo.get(f"{method}_crf", {}).get("ignore_frac")) else None,
            "ignored as bg": pseudo.get(f"{method}_crf", {}).get("miou_bg"),
            "weak / full (%)": 100 * seg["ratio"] if "ratio" in seg else None,
            "weak / full + CRF (%)": 100 * seg["ratio_crf"] if "ratio_crf" in seg else None,
        })  # fmt: skip
    cols = ["setting", *(CAM_NAMES[k] for k in ("cam", "refined", "proto", "cpmc")), "CPMC thr.", "CPMC GT-free"]
    # the labels' ignore share, shown when some setting's labels leave pixels out (pseudo.band)
    # ... and weak / full after the dense CRF when some setting scored it (segmentation.test_crf)
    optional = ("ignored (%)", "ignored as bg", "weak / full + CRF (%)")
    claim_cols = [k for k in (claims[0] if claims else ["setting"]) if k not in optional or any(c[k] for c in claims)]
    return (markdown_table(maps, cols) + "\n\n*Prototype CAM → CPMC (%), pseudo labels from the rule that reads no "
            "ground truth (scored on their labelled pixels); body recall and FP shares at that decision:*\n\n"
            + markdown_table(claims, claim_cols))  # fmt: skip


# (row label, how to read it from a metrics.json): the headline numbers of spread_table
_HEADLINES = [
    ("classifier val mAP", lambda m: _get(m, "classifier.val_mAP")),
    *((f"{name} mIoU (oracle view)", lambda m, k=k: _get(m, f"cams.{k}.miou"))
      for k, name in (("cam", "classifier CAM"), ("refined", "refined CAM"), ("proto", "prototype CAM"),
                      ("cpmc", "CPMC"))),
    ("CPMC − classifier CAM", lambda m: _diff(m, "cams.cpmc.miou", "cams.cam.miou")),
    ("CPMC − prototype CAM", lambda m: _diff(m, "cams.cpmc.miou", "cams.proto.miou")),
    *((f"{what}: {'CPMC' if k == 'cpmc' else 'prototype CAM'} (GT-free decision)",
       lambda m, k=k, key=key: _get(m, f"cams.{k}.gt_free.pathology.{key}"))
      for what, key in (("body recall", "recall_body"), ("context labelled object", "fp_context"),
                        ("distractor labelled object", "fp_distractor"))
      for k in ("proto", "cpmc")),
    ("CPMC mIoU, ground-truth-free decision", lambda m: _get(m, "cams.cpmc.gt_free.miou")),
    ("pseudo labels + CRF (labelled pixels)", lambda m: _get(m, f"pseudo.{_method(m)}_crf.miou")),
    ("pseudo labels: ignored (%)", lambda m: None if (x := _get(m, f"pseudo.{_method(m)}_crf.ignore_frac")) is None else 100 * x),
    ("pseudo labels + CRF, ignored as background", lambda m: _get(m, f"pseudo.{_method(m)}_crf.miou_bg")),
    ("network on pseudo labels", lambda m: _get(m, "seg.wsss.miou")),
    ("network on ground truth", lambda m: _get(m, "seg.full.miou")),
    ("weak / full (%)", lambda m: None if _get(m, "seg.ratio") is None else 100 * _get(m, "seg.ratio")),
    ("network on pseudo labels + CRF", lambda m: _get(m, "seg.wsss.miou_crf")),
    ("network on ground truth + CRF", lambda m: _get(m, "seg.full.miou_crf")),
    ("weak / full + CRF (%)", lambda m: None if _get(m, "seg.ratio_crf") is None else 100 * _get(m, "seg.ratio_crf")),
]  # fmt: skip


def _diff(m: Mapping[str, Any], a: str, b: str) -> float | None:
    x, y = _get(m, a), _get(m, b)
    return None if x is None or y is None else x - y


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
    """Per run of its own synthetic benchmark (e.g. the validation settings): the IoU the network on pseudo
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


def variant_runs(runs: Mapping[str, Mapping[str, Any]], variant: str) -> dict[str, Mapping[str, Any]]:
    """The runs of one variant of a family sweep (points ``<variant>-<setting>-seed-<seed>``), keyed
    by ``<setting>-seed-<seed>``.

    Example:
        >>> variant_runs({"default-test-0-seed-0": {}, "paper-test-0-seed-0": {}}, "default")
        {'test-0-seed-0': {}}
    """
    return {n.removeprefix(f"{variant}-"): m for n, m in runs.items() if n.startswith(f"{variant}-")}


def _gains(c: Component, runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[float]:
    """The component's gain in each run of the test family that has both numbers."""
    default = variant_runs(runs.get("test", {}), "default")
    out = []
    for rest, m in default.items():
        if c.within:
            other = m
        else:
            other = runs.get(c.sweep, {}).get(f"{c.variant}-{rest}")
        a, b = _get(m, c.metric), _get(other or {}, c.within or c.metric)
        if a is not None and b is not None:
            out.append(a - b)
    return out


def additions_table(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """What CPMC does and what was added: every component of :data:`cpmc_lib.components.COMPONENTS`
    with its origin and, where the test family switches it off, its gain there.

    Args:
        runs: ``{sweep: {point: metrics.json}}`` of the test family's sweeps (``test``,
            ``test_labels``; their records or a run here).

    Returns:
        A Markdown table: component, origin, source, the metric, the gain as mean ± sd over the
        runs that have both numbers, and on how many of them it is positive ("not recorded" where
        the runs are missing; "–" for a component the test family does not switch off).

    Example:
        >>> m = lambda x, y: {"seg": {"wsss": {"miou": x, "miou_crf": y}}}
        >>> table = additions_table({"test": {"default-t-seed-0": m(70.0, 74.0), "default-t-seed-1": m(71.0, 73.0)}})
        >>> [line.replace("\xa0", " ") for line in table.splitlines() if line.startswith("| test-time")]
        ["| test-time dense CRF | field | DeepLab's protocol | seg.wsss.miou_crf | +3.0 ± 1.4 | 2 of 2 |"]
    """
    rows = []
    for c in COMPONENTS:
        gains = _gains(c, runs) if c.metric else []
        measured = c.metric and (c.within or c.variant)
        rows.append({
            "component": c.name, "origin": c.origin, "source": c.source, "metric": c.metric or "–",
            "gain on the test family": _mean_sd(gains, signed=True) if gains else ("not recorded" if measured else "–"),
            "positive on": f"{sum(g > 0 for g in gains)} of {len(gains)}" if gains else "–",
        })  # fmt: skip
    return markdown_table(rows, list(rows[0]))


# what each gain is read on, in words
METRIC_WORDS = {
    "gt_free.miou": "mIoU of the map at the pipeline's own GT-free cut, over the map before it",
    "pseudo.cpmc_crf.miou": "pseudo-label mIoU after the CRF",
    "seg.wsss.miou_crf": "network mIoU with the test-time CRF",
}


def _metric_words(c: Component) -> str:
    words = next((w for key, w in METRIC_WORDS.items() if c.metric.endswith(key)), c.metric)
    return "network mIoU, with the test-time CRF over without it" if c.within == "seg.wsss.miou" else words


def component_verdicts(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """One line per component the test family measures: the verdict, its gain as mean ± sd over the
    runs (settings x training seeds), and on how many runs it is positive.

    The verdict is read from the numbers: "helps" where the mean gain exceeds its standard deviation,
    "hurts" where it is below minus it, else "no clear effect" (the spread covers zero); with one run,
    its sign. A gain in pseudo-label mIoU (which counts labelled pixels only) carries the change of the
    ignored share beside it.

    Args:
        runs: ``{sweep: {point: metrics.json}}`` of the test family (as :func:`additions_table`).

    Returns:
        A Markdown list ("not recorded" for a component without runs).

    Example:
        >>> m = lambda x, y: {"seg": {"wsss": {"miou": x, "miou_crf": y}}}
        >>> lines = component_verdicts({"test": {"default-t-seed-0": m(70.0, 74.0), "default-t-seed-1": m(71.0, 73.0)}})
        >>> [line.replace("\xa0", " ") for line in lines.splitlines() if "test-time dense CRF" in line]
        ['- **test-time dense CRF**, field standard: helps, +3.0 ± 1.4 network mIoU, with the test-time CRF over without it (positive on 2 of 2 runs)']
    """
    lines = []
    for c in COMPONENTS:
        if not (c.metric and (c.within or c.variant)):
            continue
        head = f"- **{c.name}**, {ORIGIN_NAMES[c.origin]}"
        gains = _gains(c, runs)
        if not gains:
            lines.append(f"{head}: not recorded (no run of `papermill_runs/{c.sweep or 'test'}.yaml` yet)")
            continue
        mean = statistics.fmean(gains)
        sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
        verdict = "helps" if mean > sd else "**hurts**" if mean < -sd else "no clear effect (its spread covers zero)"
        line = f"{head}: {verdict}, {_mean_sd(gains, signed=True)} {_metric_words(c)} (positive on {sum(g > 0 for g in gains)} of {len(gains)} runs)"
        if c.metric.startswith("pseudo.") and c.metric.endswith(".miou"):
            share = c.metric.removesuffix(".miou") + ".ignore_frac"
            ignored = _gains(dataclasses.replace(c, metric=share), runs)
            if ignored:
                line += f"; the ignored share moves {_mean_sd([100 * g for g in ignored], signed=True)} points"
        lines.append(line)
    return "\n".join(lines)


# the pipeline's end numbers, for the paper-only pipeline beside the default (labels of _HEADLINES)
_PIPELINE_ROWS = (
    "CPMC mIoU, ground-truth-free decision", "pseudo labels + CRF (labelled pixels)", "pseudo labels: ignored (%)",
    "pseudo labels + CRF, ignored as background", "network on pseudo labels", "network on pseudo labels + CRF",
    "weak / full (%)", "weak / full + CRF (%)",
)  # fmt: skip


def pipelines_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """The paper-only pipeline beside the default on a family sweep's runs (points ``paper-...`` and
    ``default-...``, :func:`variant_runs`), over the runs both variants finished: each end number as
    mean ± sd, and the default's gain run by run, mean ± sd.

    Returns:
        A Markdown table, or "" when no run has both variants.
    """
    paper, default = variant_runs(runs, "paper"), variant_runs(runs, "default")
    both = [n for n in default if n in paper]
    if not both:
        return ""
    read = dict(_HEADLINES)
    rows = []
    for label in _PIPELINE_ROWS:
        pairs = [(a, b) for n in both if (a := read[label](paper[n])) is not None and (b := read[label](default[n])) is not None]
        if pairs:
            rows.append({"": label, "the paper's pipeline": _mean_sd([a for a, _ in pairs]),
                         "the default (+ this book's additions)": _mean_sd([b for _, b in pairs]),
                         "the default's gain": _mean_sd([b - a for a, b in pairs], signed=True)})  # fmt: skip
    head = f"*Over the {len(both)} runs both pipelines finished (mean ± sd; the gain is taken run by run):*\n\n"
    return head + markdown_table(rows, list(rows[0])) if rows else ""
