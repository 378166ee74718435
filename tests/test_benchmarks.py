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
