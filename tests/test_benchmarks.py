"""Smoke test of the CAM benchmark: it runs and reports every method (its speed is never tested)."""

import json
import subprocess
import sys

from cpmc_lib.cam_methods import JOINT_METHODS
from cpmc_lib.pipeline import CAM_REPORT

JOINT = {"+".join(g) for g in JOINT_METHODS}


def test_bench_cams_quick_json_reports_every_method():
    cmd = [sys.executable, "benchmarks/bench_cams.py", "--quick", "--json", "--device", "cpu",
           "--batch", "2", "--rounds", "1", "--warmup", "0"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out)
    assert result["device"] == "cpu" and set(result["images_per_s"]) == {*CAM_REPORT, *JOINT}
    assert all(v > 0 for v in result["images_per_s"].values())


def _bench_pipeline():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pipeline.py"
    spec = importlib.util.spec_from_file_location("bench_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_pipeline_quick_extrapolates_per_image():
    """--quick's arithmetic by hand: images each stage handles, and seconds per image x images."""
    from cpmc_lib.config import load_config

    bench = _bench_pipeline()
    full = load_config("configs/synth-voc-scale.yaml")
    part = load_config("configs/synth-voc-scale.yaml", bench.slice_overrides(full, 4))
    sizes, slice_sizes = bench.split_sizes(full), bench.split_sizes(part)
    assert sizes == {"train": 10582, "cam": 10582, "val": 1449}
    assert slice_sizes == {"train": 4, "cam": 4, "val": 2}
    # classifier: drop_last batches of 16 over 5 epochs; val scored every epoch
    assert bench.workload(full, "classifier", sizes) == {"train": 10576 * 5, "eval": 1449 * 5}
    assert bench.workload(part, "classifier", slice_sizes) == {"train": 4, "eval": 2}
    assert bench.workload(full, "cams_cam", sizes) == {"eval": 10582}
    assert bench.workload(full, "seg_wsss", sizes) == {"train": 10580 * 19, "eval": 1449}
    # segmentation reports its own split of train and eval seconds
    seg = bench.extrapolate({"seconds": 9, "train_seconds": 4.0, "eval_seconds": 5.0},
                            {"train": 4, "eval": 2}, {"train": 400, "eval": 10})  # fmt: skip
    assert seg == 4.0 / 4 * 400 + 5.0 / 2 * 10
    # elsewhere one rate, an evaluated image a third of a trained one
    assert bench.extrapolate({"seconds": 10.0}, {"train": 6, "eval": 3}, {"train": 60, "eval": 30}) == 100.0
    assert bench.extrapolate({"seconds": 3.0}, {"eval": 0}, {"eval": 0}) == 3.0  # nothing to scale
