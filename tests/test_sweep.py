"""A sweep whose failing points (an error, a dead kernel) leave the good point's results intact."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from cpmc_lib.sweep import load_sweep, run_sweep


def _notebook(path):
    nb = new_notebook()
    params = new_code_cell('config_path = ""\noverrides = []\nuntil = "seg"\nmethods = []\nmetrics_path = ""')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import json, os\n"
        "from cpmc_lib.config import load_config\n"
        "cfg = load_config(config_path, overrides)  # an unknown key fails here\n"
        "if cfg.refinement.iterations == 9:\n"
        "    os._exit(1)  # the kernel dies mid-point, as on a segfault or the OOM killer\n"
        "json.dump({'cams': {'cam': {'miou': cfg.refinement.iterations * 10.0}}}, open(metrics_path, 'w'))"
    )
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def sweep_file(tmp_path):
    _notebook(tmp_path / "nb.ipynb")
    spec = {
        "name": "t",
        "notebook": str(tmp_path / "nb.ipynb"),
        "config": "configs/quick.yaml",
        "points": [
            {"name": "good", "set": {"refinement.iterations": 3}},
            {"name": "bad", "set": {"refinement.iterationz": 1}},
            {"name": "dead", "set": {"refinement.iterations": 9}},
        ],
    }
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_failing_point_is_reported_and_others_finish(sweep_file, tmp_path):
    out = tmp_path / "out"
    result = run_sweep(sweep_file, output=out, progress=False)
    rows = {r["point"]: r for r in result["rows"]}
    assert rows["good"]["status"] == "done" and rows["good"]["cams.cam.miou"] == 30.0
    assert rows["good"]["refinement.iterations"] == "3"  # parameters are columns
    assert rows["bad"]["status"] == "failed"
    assert "iterationz" in result["failures"]["bad"]
    assert (out / "bad" / "error.txt").is_file() and not (out / "bad" / "metrics.json").exists()
    assert (out / "good" / "nb.ipynb").is_file()  # the executed notebook is kept
    assert "good" in (out / "results.csv").read_text()
    assert rows["dead"]["status"] == "failed" and "DeadKernelError" in result["failures"]["dead"]
    assert not (out / "dead" / "metrics.json").exists()
    good = (out / "good" / "metrics.json").read_bytes()

    again = run_sweep(sweep_file, output=out, progress=False)
    statuses = {r["point"]: r["status"] for r in again["rows"]}
    assert statuses == {"good": "skipped", "bad": "failed", "dead": "failed"}
    assert (out / "good" / "metrics.json").read_bytes() == good  # the failures touched nothing
    assert {r["point"]: r for r in again["rows"]}["good"]["cams.cam.miou"] == 30.0


def test_a_finished_point_reruns_when_a_default_changes_its_stages(sweep_file, tmp_path, monkeypatch):
    from cpmc_lib import sweep

    out = tmp_path / "out"
    run_sweep(sweep_file, output=out, progress=False)
    spec = load_sweep(sweep_file)
    good = next(p for p in spec.points if p.name == "good")
    saved = json.loads((out / "good" / "params.json").read_text())
    assert saved["stage_keys"] == sweep.stage_keys(spec, good) and set(saved["stage_keys"]) == {
        "segmentation", "segmentation_gt"}  # fmt: skip
    real = sweep.stage_keys
    monkeypatch.setattr(sweep, "stage_keys", lambda s, p: {k: "0" * 16 for k in real(s, p)})  # new defaults
    rows = {r["point"]: r["status"] for r in run_sweep(sweep_file, output=out, progress=False)["rows"]}
    assert rows["good"] == "done"
    rows = {r["point"]: r["status"] for r in run_sweep(sweep_file, output=out, progress=False)["rows"]}
    assert rows["good"] == "skipped"  # and reused again under the same keys


def test_grid_expands_to_points(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\ngrid:\n  a.b: [1, 2]\n  c.d: [x]\n")
    sweep = load_sweep(path)
    assert [p.overrides for p in sweep.points] == [("a.b=1", "c.d=x"), ("a.b=2", "c.d=x")]
    path.write_text("name: g\npoints: []\n")
    with pytest.raises(ValueError, match="needs a 'grid' or 'points'"):
        load_sweep(path)


@pytest.mark.parametrize("name", ["ablation", "sensitivity", "robustness", "validation"])
def test_shipped_sweeps_have_valid_points(name):
    from cpmc_lib.config import load_config
    from cpmc_lib.pipeline import CAM_REPORT

    sweep = load_sweep(f"papermill_runs/{name}.yaml")
    assert sweep.notebook.is_file() and set(sweep.methods) <= set(CAM_REPORT)
    for point in sweep.points:
        load_config(sweep.config, [*sweep.base, *point.overrides])  # every key exists, every value parses


def test_record_keeps_every_finished_point_with_its_commits(tmp_path):
    from cpmc_lib.sweep import load_record, sweep_runs, write_record

    spec = tmp_path / "rec.yaml"
    spec.write_text("name: rec\npoints:\n  - {name: a, set: {synth.seed: 1}}\n  - {name: b, set: {synth.seed: 2}}\n")
    out, records = tmp_path / "out", tmp_path / "records"
    with pytest.raises(ValueError, match="no finished point"):
        write_record(spec, output=out, dest=records / "rec.json")
    run_dir = tmp_path / "runs" / "rec-a"
    (run_dir / "cams").mkdir(parents=True)
    (run_dir / "cams" / "manifest.json").write_text(json.dumps({"git_commit": "abcdef0123456789"}))
    (out / "a").mkdir(parents=True)
    metrics = {"config": {"runs_dir": str(tmp_path / "runs"), "run": "rec-a"}, "cams": {"cam": {"miou": 50.0}}}
    (out / "a" / "metrics.json").write_text(json.dumps(metrics))

    path = write_record(spec, output=out, dest=records / "rec.json", command="python -m cpmc_lib sweep rec.yaml")
    rec = load_record("rec", records)
    assert path == records / "rec.json" and rec["missing"] == ["b"]
    point = rec["points"]["a"]
    assert point["overrides"] == ["synth.seed=1"] and point["stage_commits"] == ["abcdef0123456789"]
    assert point["metrics"] == {"cams": {"cam": {"miou": 50.0}}}  # the resolved config is left out
    assert load_record("other", records) is None
    # what making it took: the points' stage times, reused stages (None or near zero) counting nothing
    from cpmc_lib.sweep import record_hours

    assert record_hours(rec) == 0.0  # these metrics carry no times
    rec["points"]["a"]["metrics"]["seconds"] = {"classifier": 5400.0, "cams_cam": None, "pseudo": 1800.0}
    assert record_hours(rec) == pytest.approx(2.0)

    # no run here: the record, with where it came from; a finished run here wins over it
    runs, source = sweep_runs("rec", output=tmp_path / "nothing", records=records)
    assert runs == {"a": {"cams": {"cam": {"miou": 50.0}}}}
    assert "python -m cpmc_lib sweep rec.yaml" in source and "abcdef0" in source and "not recorded: b" in source
    runs, source = sweep_runs("rec", output=out, records=records)
    assert runs["a"]["config"]["run"] == "rec-a" and "this checkout's run" in source
    # a sweep renamed since it was recorded: the command stays as it ran, and the source says so
    assert "then `" not in sweep_runs("rec", output=tmp_path / "nothing", records=records)[1]
    rec["file"] = "papermill_runs/rec.yaml"
    rec["command"] = "python -m cpmc_lib sweep papermill_runs/old.yaml --record"
    (records / "rec.json").write_text(json.dumps(rec))
    _, source = sweep_runs("rec", output=tmp_path / "nothing", records=records)
    assert "sweep papermill_runs/old.yaml --record`" in source
    assert "the sweep file, then `papermill_runs/old.yaml`, is now `papermill_runs/rec.yaml`" in source


def test_a_point_made_under_other_defaults_is_called_stale(tmp_path):
    """A record whose config hash is not what this checkout's config gives the point is flagged."""
    from cpmc_lib.config import load_config
    from cpmc_lib.stages import stage_hash
    from cpmc_lib.sweep import ROOT, load_sweep, stale_points, sweep_runs

    sweep = load_sweep(ROOT / "papermill_runs" / "robustness.yaml")
    point = sweep.points[1]
    now = stage_hash(load_config(ROOT / sweep.config, [*sweep.base, *point.overrides]), "segmentation")
    assert stale_points("robustness", {point.name: {"config_hash": now}}) == []
    assert stale_points("robustness", {point.name: {"config_hash": "0" * 16}}) == [point.name]
    assert stale_points("robustness", {point.name: {}}) == []  # no hash recorded: nothing to say

    records = tmp_path / "records"
    records.mkdir()
    rec = {"recorded": "2026-01-01T00:00:00", "command": "c", "missing": [],
           "points": {point.name: {"stage_commits": [], "metrics": {"config_hash": "0" * 16}}}}  # fmt: skip
    (records / "robustness.json").write_text(json.dumps(rec))
    _, source = sweep_runs("robustness", output=tmp_path / "none", records=records)
    assert f"Not this checkout's settings:** {point.name} ran" in source and "robustness.yaml --record" in source
    rec["points"][point.name]["metrics"]["config_hash"] = now
    (records / "robustness.json").write_text(json.dumps(rec))
    assert "Not this checkout" not in sweep_runs("robustness", output=tmp_path / "none", records=records)[1]


def test_records_remakes_each_record_and_resumes(sweep_file, tmp_path, monkeypatch):
    """`python -m cpmc_lib records`: every recorded sweep, its record written; a rerun skips finished points."""
    from cpmc_lib import sweep

    with pytest.raises(ValueError, match="no recorded sweep"):
        sweep.remake_records(["nope"])
    monkeypatch.setattr(sweep, "RECORDED", {"t": "tuning"})
    out, records = tmp_path / "out", tmp_path / "records"
    first = sweep.remake_records(progress=False, folder=tmp_path, output=out, records=records)
    rec = sweep.load_record("t", records)
    assert first["t"]["record"] == records / "t.json" and set(first["t"]["failures"]) == {"bad", "dead"}
    assert list(rec["points"]) == ["good"] and rec["missing"] == ["bad", "dead"]
    assert rec["command"] == "python -m cpmc_lib records --only t"
    stamp = (out / "t" / "good" / "metrics.json").stat().st_mtime_ns
    again = sweep.remake_records(["t"], progress=False, folder=tmp_path, output=out, records=records)
    assert (out / "t" / "good" / "metrics.json").stat().st_mtime_ns == stamp  # resumed: not rerun
    assert sweep.load_record("t", records)["points"] == rec["points"] and again["t"]["record"]


def test_every_recorded_sweep_is_shipped_and_valid():
    from cpmc_lib.config import load_config
    from cpmc_lib.families import TEST_RULE
    from cpmc_lib.sweep import RECORDED, ROOT

    assert set(RECORDED.values()) == {"tuning", "validation", "test"}
    for name in RECORDED:
        s = load_sweep(ROOT / "papermill_runs" / f"{name}.yaml")
        assert s.name == name
        load_config(s.config, [*s.base, *s.points[0].overrides])
    assert RECORDED["test"] == "test" and TEST_RULE["settings"] >= 5


def test_the_retired_options_keep_their_last_measurement():
    """Options that left the library keep a record of every point, made by the code that had them."""
    import yaml

    from cpmc_lib.report import retired_table
    from cpmc_lib.sweep import RECORDS, load_record

    rec = load_record("retired")
    spec = yaml.safe_load((RECORDS / "retired.yaml").read_text())
    assert rec is not None and rec["missing"] == [] and list(rec["points"]) == [p["name"] for p in spec["points"]]
    table = retired_table(rec)
    for name in rec["points"]:
        assert f"| {name} |" in table
    assert all(p["stage_commits"] for p in rec["points"].values())


def test_the_retired_label_rules_keep_their_last_measurement():
    from cpmc_lib.report import retired_gap_table
    from cpmc_lib.sweep import load_record

    rec = load_record("retired_gap")
    assert rec is not None and set(rec["experiments"]) == {"crf-agreement", "self-training"}
    table = retired_gap_table(rec)
    assert all(f"| {name} |" in table for name in rec["experiments"])
