"""The test family is drawn by its written rule: the same settings every time, several knobs each."""

from __future__ import annotations

import pytest

from cpmc_lib.config import SynthConfig
from cpmc_lib.families import (
    TEST_RULE,
    TRAINING_SEEDS,
    VALIDATION_RULE,
    family_points,
    test_points,
    test_settings,
)
from cpmc_lib.sweep import load_sweep, point_config
from cpmc_lib.synth import check_config


def test_the_rule_draws_the_same_settings_and_each_changes_several_knobs():
    settings = test_settings()
    assert settings == test_settings() and len(settings) == TEST_RULE["settings"]
    default = SynthConfig()
    for s in settings:
        changed = [k for k, v in s["synth"].items() if k != "seed" and getattr(default, k) != v]
        assert len(changed) >= 4, s  # other data sets differ in many ways at a time
        assert s["synth"]["seed"] >= TEST_RULE["generator_seed"] and s["num_classes"] == s["synth"]["classes"] + 1
        check_config(SynthConfig(**s["synth"]))  # every draw is a valid generator setting
    assert len({s["synth"]["seed"] for s in settings}) == len(settings)
    other = test_settings({**TEST_RULE, "rng_seed": 1})
    assert other != settings  # another rule seed, other settings: the seed is part of the written rule


def test_the_test_sweeps_run_every_variant_on_every_setting_and_training_seed():
    for path, until in (("papermill_runs/test.yaml", "segmentation"), ("papermill_runs/test_labels.yaml", "pseudo")):
        sweep = load_sweep(path)
        variants = {p.name.split("-test-")[0] for p in sweep.points}
        assert len(variants) >= 2 and sweep.until == until
        assert len(sweep.points) == len(variants) * TEST_RULE["settings"] * len(TRAINING_SEEDS)
        for v in variants:
            names = [p.name.removeprefix(f"{v}-") for p in sweep.points if p.name.startswith(f"{v}-test-")]
            assert names == [p["name"] for p in test_points()]
        roots = {point_config(sweep, p).data.root for p in sweep.points}
        assert len(roots) == TEST_RULE["settings"] and "data/synth" not in roots  # never the tuning data
    paper = [p for p in load_sweep("papermill_runs/test.yaml").points if p.name.startswith("paper-")]
    cfg = point_config(load_sweep("papermill_runs/test.yaml"), paper[0])
    assert cfg.pseudo.assign == "argmax" and not cfg.pseudo.negatives  # the paper-only pipeline


def test_drawn_validation_settings_are_other_draws_of_the_same_rule():
    """Choices may read validation settings drawn like the test family, never the test settings themselves."""
    val, test = test_settings(VALIDATION_RULE), test_settings()
    assert len(val) == len(test) and all(v["name"].startswith("val-") for v in val)
    assert not {v["synth"]["seed"] for v in val} & {t["synth"]["seed"] for t in test}
    assert {k: v for k, v in VALIDATION_RULE.items() if k not in ("rng_seed", "generator_seed", "prefix")} == {
        k: v for k, v in TEST_RULE.items() if k not in ("rng_seed", "generator_seed")
    }  # the same ranges
    sweep = load_sweep("papermill_runs/validation_drawn.yaml")
    assert [p.name for p in sweep.points] == [f"default-{p['name']}" for p in family_points("validation")]
    roots = {point_config(sweep, p).data.root for p in sweep.points}
    assert not roots & {point_config(load_sweep("papermill_runs/test.yaml"), p).data.root for p in load_sweep("papermill_runs/test.yaml").points}
    with pytest.raises(ValueError, match="drawing rule"):
        family_points("tuning")
