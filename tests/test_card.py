"""The dataset card's measurements: failures of one map relative to another, the benchmark's calibration."""

import pytest

from cpmc_lib import card
from cpmc_lib.datasets import build_dataset
from cpmc_lib.stages import stage_hash
from cpmc_lib.store import RunStore


def test_compare_failures_of_a_map_against_itself_and_another(tiny_pipeline):
    cfg, _ = tiny_pipeline
    store, ds = RunStore.for_config(cfg), build_dataset(cfg, cfg.data.cam_split)
    same = card.compare_failures(store, ds, "cam", "cam")
    assert same["fn"] == 0 and same["fp"] == 0  # a map adds no failure to itself
    other = card.compare_failures(store, ds, "cam", "proto")
    assert 0 <= other["fn"] <= 100 and 0 <= other["fp"] <= 100


def test_benchmark_calibration_reports_the_card_fields(tiny_pipeline):
    cfg, _ = tiny_pipeline
    cal = card.benchmark_calibration(cfg, RunStore.for_config(cfg))
    for key in ("cam_miou", "recall_part", "recall_body", "act_context", "act_neutral",
                "proto_fn_of_cam_objects", "proto_fp_on_cam_background"):  # fmt: skip
        assert key in cal
    assert cal["classifier"]["config_hash"] == stage_hash(cfg, "classifier")


def test_compare_failures_is_cached_beside_the_maps(tiny_pipeline, monkeypatch):
    cfg, _ = tiny_pipeline
    store, ds = RunStore.for_config(cfg), build_dataset(cfg, cfg.data.cam_split)
    first = card.compare_failures(store, ds, "cam", "proto")
    assert (store.path("cams") / "proto" / "failures_vs_cam.json").is_file()

    def no_pass(*args, **kwargs):
        raise AssertionError("the split was read again")

    monkeypatch.setattr(card, "fn_fp_fractions", no_pass)
    assert card.compare_failures(store, ds, "cam", "proto") == first  # read back
    ds.names = ds.names[:-1]  # other images: measured again
    with pytest.raises(AssertionError, match="read again"):
        card.compare_failures(store, ds, "cam", "proto")
