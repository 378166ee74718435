"""Tables of the pseudo labels: the scored label sets of a ``metrics.json``, label variants side by side,
the negative prototypes, the labels of a sweep over the ignore zone and their pathology measures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .text import _get, markdown_table

__all__ = [
    "background_rule_verdicts", "label_pathologies", "label_row", "label_variants_table", "label_zone_table",
    "method_labels_table", "negatives_line", "scored_labels",
]  # fmt: skip


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
    result): mIoU after the CRF, the share ignored, the mIoU with the ignored pixels as background, then its body / atypical recall and context /
    distractor labelled object where the data has diagnostic masks; ``head`` names the first column.

    Example:
        >>> print(label_variants_table("zone", {"on": {"miou_crf": 80.0, "ignore_frac_crf": 0.05, "miou_bg_crf": 71.0}}).splitlines()[2])
        | on | 80.0 | 5.0 | 71.0 | – | – | – | – |
    """
    names = {"recall_body": "body recall", "recall_atypical": "atypical recall",
             "fp_context": "context labelled object (%)", "fp_distractor": "distractor labelled object (%)"}  # fmt: skip
    rows = []
    for name, r in variants.items():
        patho = r.get("pathology_crf", {})
        rows.append({head: name, "mIoU + CRF": r["miou_crf"], "ignored (%)": 100 * r["ignore_frac_crf"],
                     "ignored as background": r.get("miou_bg_crf"),
                     **{names[k]: patho.get(k) for k in LABEL_COLUMNS}})  # fmt: skip
    return markdown_table(rows, [head, "mIoU + CRF", "ignored (%)", "ignored as background", *names.values()])


def method_labels_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Pseudo labels of several CAM methods (method -> :func:`cpmc_lib.pseudo.make_labels`'s result):
    mIoU without and with the CRF, each with its ignored share beside it, the CRF labels' mIoU with the
    ignored pixels counted as background, then their body recall and context labelled object.

    Example:
        >>> r = {"miou": 70.0, "ignore_frac": 0.1, "miou_crf": 72.0, "ignore_frac_crf": 0.08, "miou_bg_crf": 66.0}
        >>> print(method_labels_table({"cpmc": r}).splitlines()[2])
        | cpmc | 70.0 (10.0 % ignored) | 72.0 (8.0 % ignored) | 66.0 | – | – |
    """

    def with_share(miou: float, share: float | None) -> str:
        return f"{miou:.1f}" if share is None else f"{miou:.1f} ({100 * share:.1f} % ignored)"

    rows = [{
        "method": m, "mIoU": with_share(r["miou"], r.get("ignore_frac")),
        "mIoU + CRF": with_share(r["miou_crf"], r.get("ignore_frac_crf")),
        "+ CRF, ignored as background": r.get("miou_bg_crf"),
        "body recall": r.get("pathology_crf", {}).get("recall_body"),
        "context labelled object (%)": r.get("pathology_crf", {}).get("fp_context"),
    } for m, r in results.items()]  # fmt: skip
    return markdown_table(rows, list(rows[0]) if rows else ["method"])


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


def _method(m: Mapping[str, Any]) -> str:
    """The CAM method a run's pseudo labels came from."""
    return m.get("config", {}).get("pseudo", {}).get("method", "cpmc")


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
            "ignored as background": crf.get("miou_bg"),
            "network on pseudo labels": _get(m, "seg.wsss.miou"),
            "weak / full (%)": 100 * r if (r := _get(m, "seg.ratio")) is not None else None,
        })  # fmt: skip
    return markdown_table(rows, list(rows[0]) if rows else ["point"])


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


def background_rule_verdicts(rows: Sequence[Mapping[str, Any]], rules: Sequence[str], names: Mapping[str, str],
                             default: str = "otsu", tolerance: float = 1.0) -> list[str]:  # fmt: skip
    """One sentence per map of ``benchmarks/background_rules.py``'s rows: what the ``default`` rule costs
    against the oracle threshold at most, and which rules stay within ``tolerance`` on every setting.

    Example:
        >>> rows = [{"method": "cpmc", "oracle": 64.0, "otsu": 63.5, "fixed": 62.0},
        ...         {"method": "cpmc", "oracle": 60.0, "otsu": 58.6, "fixed": 59.5}]
        >>> background_rule_verdicts(rows, ["otsu", "fixed"], {"otsu": "Otsu"})[0]
        'cpmc: the default rule costs at most 1.4 over the 2 settings; no rule stays within 1 point on every setting (the closest, Otsu, costs up to 1.4).'
    """
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        worst = {k: max(r["oracle"] - r[k] for r in mine) for k in rules}
        held = [names.get(k, k) for k in rules if worst[k] <= tolerance]
        best = min(rules, key=worst.get)
        out.append(f"{method}: the default rule costs at most {worst[default]:.1f} over the {len(mine)} settings; "
                   + (f"within {tolerance:g} point everywhere: {', '.join(held)}." if held else
                      f"no rule stays within {tolerance:g} point on every setting (the closest, "
                      f"{names.get(best, best)}, costs up to {worst[best]:.1f})."))  # fmt: skip
    return out
