"""Markdown tables of measured results, for the chapters and the command line.

One module per topic; every name is re-exported here, so ``cl.report.headline(...)`` and
``from cpmc_lib.report import markdown_table`` work as before:

- ``text``: number formatting, the verb a measured change needs, Markdown tables.
- ``maps``: the CAM maps per method and an ablation's verdict.
- ``labels``: the pseudo labels: scored label sets, variants, negative prototypes, ignore zone.
- ``classes``: where the network on pseudo labels loses to the ceiling, by kind of pixel and by class.
- ``checks``: the landing page's headline and CPMC's promises checked per run.
- ``sweeps``: tables over several runs: settings, seeds, per-class spread, loss by body group.
- ``tried``: what else was tried: the retired options' last measurements, from their records.

Imports among them flow one way, floor by floor (each imports only from the floors below it):
``text``; ``maps``, ``labels``, ``tried``; ``classes``, ``checks``; ``sweeps``.
"""

from __future__ import annotations

from .checks import ceiling_moved, family_limits, headline, limits, promise_summary, promise_table, promises
from .classes import body_groups, class_gap, class_table, error_gap, error_table, metrics_class_table
from .labels import (
    background_rule_verdicts,
    label_pathologies,
    label_row,
    label_variants_table,
    label_zone_table,
    method_labels_table,
    negatives_line,
    scored_labels,
)
from .maps import ablation_verdict, fp_promise, method_table
from .sweeps import (
    additions_table,
    class_spread_table,
    component_verdicts,
    group_loss_table,
    pipelines_table,
    settings_tables,
    spread_table,
    variant_runs,
)
from .text import compare, delta, direction, fmt, markdown_table
from .tried import retired_gap_table, retired_table

__all__ = [
    "background_rule_verdicts", "label_row", "label_variants_table", "method_labels_table", "negatives_line", "scored_labels",
    "additions_table", "ablation_verdict", "component_verdicts", "ceiling_moved", "family_limits", "fp_promise", "compare", "delta", "direction", "fmt", "headline", "limits", "markdown_table", "method_table",
    "promise_summary", "promise_table", "promises", "settings_tables", "spread_table", "label_pathologies",
    "error_table", "error_gap", "label_zone_table", "class_table", "class_gap", "body_groups", "class_spread_table", "group_loss_table",
    "metrics_class_table", "pipelines_table", "retired_gap_table", "retired_table", "variant_runs",
]  # fmt: skip
