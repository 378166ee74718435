"""The three families of benchmark settings: what choices may look at, and what only reports.

- **Tuning**: the default benchmark (generator seed 0) and training seeds 0, 1 and 2. Every default
  of the pipeline was chosen here.
- **Validation**: settings that choices have already looked at, named so: the five of
  ``papermill_runs/validation.yaml`` (generator seeds 1 and 2, 15 classes, parts of 30 %, context in
  60 % of images; each changes one knob), and the settings :data:`VALIDATION_RULE` draws: the
  test family's rule with another seed, so that choices can look at settings that differ from the
  tuning data in many ways at once without reading the test family (``papermill_runs/validation_drawn.yaml``).
  Choices may read them.
- **Test**: settings drawn by :data:`TEST_RULE`, written down here before any of them ran. Each
  changes several generator knobs at once, as real data sets differ from each other in many ways at
  a time. They are run through segmentation with the tuning family's three training seeds,
  recorded (``papermill_runs/test.yaml``), and read only to report: a choice changed after reading
  a test setting moves that setting to validation, and the ledger of choices says so.

Example:
    >>> [p["name"] for p in test_settings()][:2]
    ['test-0', 'test-1']
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TEST_RULE", "TRAINING_SEEDS", "VALIDATION_RULE", "family_points", "test_points", "test_settings"]

TRAINING_SEEDS = (0, 1, 2)

# The rule that draws the test family (fixed before its first run; never tuned). Each setting is a
# new generator seed and an independent uniform draw of every knob below.
TEST_RULE: dict[str, Any] = {
    "rng_seed": 20261207,  # the day the rule was written
    "settings": 5,
    "generator_seed": 1000,  # setting i is generated with synth.seed 1000 + i
    "classes": (6, 16),  # integers in [6, 16]
    "part_frac": (0.12, 0.35),
    "context_prob": (0.2, 0.7),
    "max_objects": (2, 4),  # integers in [2, 4]
    "absent_context_prob": (0.1, 0.4),
    "distractor_prob": (0.25, 0.75),
    "atypical_prob": (0.1, 0.4),
}


# Validation settings drawn like the test family's, from other seeds: choices may read these.
VALIDATION_RULE: dict[str, Any] = {**TEST_RULE, "rng_seed": 7, "generator_seed": 2000, "prefix": "val"}


def test_settings(rule: dict[str, Any] = TEST_RULE) -> list[dict[str, Any]]:
    """The generator settings a rule draws (the test family's by default): ``{"name", "synth":
    {...}, "num_classes"}`` per setting (the same rule gives the same settings)."""
    rng = np.random.default_rng(rule["rng_seed"])
    out = []
    for i in range(rule["settings"]):
        synth: dict[str, Any] = {"seed": rule["generator_seed"] + i}
        for key in ("classes", "max_objects"):
            lo, hi = rule[key]
            synth[key] = int(rng.integers(lo, hi + 1))
        for key in ("part_frac", "context_prob", "absent_context_prob", "distractor_prob", "atypical_prob"):
            lo, hi = rule[key]
            synth[key] = round(float(rng.uniform(lo, hi)), 3)
        out.append({"name": f"{rule.get('prefix', 'test')}-{i}", "synth": synth, "num_classes": synth["classes"] + 1})
    return out


def test_points(rule: dict[str, Any] = TEST_RULE) -> list[dict[str, Any]]:
    """Sweep points of the test family: every setting with every training seed, each generated into
    its own folder ``data/synth-<setting>``: ``{"name", "set": {config key: value}}``."""
    points = []
    for s in test_settings(rule):
        base = {f"synth.{k}": v for k, v in s["synth"].items()}
        base.update({"data.num_classes": s["num_classes"], "data.root": f"data/synth-{s['name']}"})
        for seed in TRAINING_SEEDS:
            points.append({"name": f"{s['name']}-seed-{seed}", "set": {**base, "seed": seed}})
    return points


def family_points(family: str) -> list[dict[str, Any]]:
    """The sweep points of a drawn family: ``"test"`` (:data:`TEST_RULE`) or ``"validation"``
    (:data:`VALIDATION_RULE`)."""
    rules = {"test": TEST_RULE, "validation": VALIDATION_RULE}
    if family not in rules:
        raise ValueError(f"family {family!r}; the families with a drawing rule: {', '.join(rules)}")
    return test_points(rules[family])
