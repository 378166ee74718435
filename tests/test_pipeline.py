"""End to end: every stage on a tiny synthetic set, then metrics.json, reuse and the CLI."""

import json

import pytest
from conftest import TINY_OVERRIDES

from cpmc_lib import pipeline
from cpmc_lib.cli import main


@pytest.fixture(scope="module")
def tiny(tiny_pipeline):
    return tiny_pipeline


@pytest.mark.slow
def test_pipeline_writes_complete_metrics(tiny):
    cfg, metrics = tiny
    on_disk = json.loads((cfg.run_dir() / "metrics.json").read_text())
    assert on_disk["config_hash"] == metrics["config_hash"] == cfg.stage_hash("segmentation")
    assert set(metrics["cams"]) == set(pipeline.CAM_REPORT)
    for r in metrics["cams"].values():
        assert 0 <= r["miou"] <= 100 and 0 < r["threshold"] < 1
    assert {"cpmc", "cpmc_crf"} <= set(metrics["pseudo"])
    # The pseudo labels' background decision reads no ground truth; every map is scored there too.
    assert metrics["pseudo"]["threshold_rule"] == cfg.pseudo.threshold_rule != "oracle"
    assert (metrics["pseudo"]["threshold"] is None) == (cfg.pseudo.threshold_rule == "otsu")
    for r in metrics["cams"].values():
        assert r["gt_free"]["rule"] == cfg.pseudo.threshold_rule and 0 <= r["gt_free"]["miou"] <= 100
    for part in ("wsss", "full"):
        assert 0 <= metrics["seg"][part]["miou"] <= 100
    assert metrics["dataset"]["num_classes"] == 5
    assert metrics["peak_rss_mb"] > 0 and metrics["seconds"]["total"] > 0
    # one entry per pass: the CPMC maps and the Grad-CAM family are each made together
    passes = {k for k in metrics["stage_seconds"] if k.startswith("cams_")}
    assert passes == {"cams_cam", "cams_refined+proto+cpmc", "cams_gradcam+gradcampp+layercam"}
    assert "weak / full" in pipeline.format_metrics(metrics)


@pytest.mark.slow
def test_pipeline_rerun_reuses_every_stage(tiny):
    cfg, first = tiny
    again = pipeline.run(cfg, progress=False)
    assert again["cams"] == first["cams"] and again["seg"] == first["seg"]
    assert again["seconds"]["classifier"] < 1.0  # reused, not retrained


@pytest.mark.slow
def test_cli_pipeline_prints_table(tiny, capsys):
    cfg, _ = tiny
    args = ["pipeline", "--config", "configs/default.yaml", "--quiet"]
    for o in [*TINY_OVERRIDES, f"data.root={cfg.data.root}", f"runs_dir={cfg.runs_dir}"]:
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Pseudo labels" in out and "metrics.json" in out
