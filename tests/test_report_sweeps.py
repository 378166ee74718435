"""The tables over several runs of ``cpmc_lib.report.sweeps``."""

from test_report_checks import _run  # a metrics.json of a run, for the promise checks

from cpmc_lib import report


def test_settings_tables_give_each_setting_its_maps_and_promise_numbers():
    from cpmc_lib.report import settings_tables

    runs = {"a": _run(50.0, 60.0, 64.0), "b": _run(50.0, 60.0, 62.0, context=(12.0, 14.0))}
    tables = settings_tables(runs)
    assert "| b | 55.0 | 56.0 | 65.0 | 62.5 | 0.40 | 62.0 |" in tables  # oracle views, then CPMC as cut
    assert "| b | 70.0 → 77.0 | 12.0 → 14.0 | 24.0 → 23.0 | 72.0 | 90.0 |" in tables
    assert "ignored" not in tables  # no setting's labels leave pixels out: no column
    runs["b"]["pseudo"]["cpmc_crf"]["ignore_frac"] = 0.05
    tables = settings_tables(runs)
    assert "| b | 70.0 → 77.0 | 12.0 → 14.0 | 24.0 → 23.0 | 72.0 | 5.0 | 90.0 |" in tables
    assert "| a | 70.0 → 77.0 | 12.0 → 11.0 | 24.0 → 23.0 | 72.0 | – | 90.0 |" in tables
    assert "CRF (%)" not in tables  # no setting scored its networks with the CRF: no column
    runs["a"]["seg"]["ratio_crf"] = 0.91
    tables = settings_tables(runs)
    assert "| a | 70.0 → 77.0 | 12.0 → 11.0 | 24.0 → 23.0 | 72.0 | – | 90.0 | 91.0 |" in tables
    runs["b"]["pseudo"]["cpmc_crf"]["miou_bg"] = 65.0  # the labels' coverage beside their ignored share
    assert "| b | 70.0 → 77.0 | 12.0 → 14.0 | 24.0 → 23.0 | 72.0 | 5.0 | 65.0 | 90.0 |" in settings_tables(runs)


def test_spread_table_gives_each_number_per_run_with_mean_and_sd():
    runs = {
        f"seed-{i}": {
            "cams": {"cam": {"miou": 50.0 + i}, "cpmc": {"miou": 70.0 + 2 * i}},
            "seg": {"ratio": 0.8},
        }
        for i in range(3)
    }
    table = report.spread_table(runs)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert lines["classifier CAM mIoU (oracle view)"].endswith("| 51.0\u00a0±\u00a01.0 |")
    assert (
        lines["CPMC − classifier CAM"]
        == "| CPMC − classifier CAM | 20.0 | 21.0 | 22.0 | 21.0\u00a0±\u00a01.0 |"
    )
    assert "weak / full (%)" in lines and "80.0\u00a0±\u00a00.0" in lines["weak / full (%)"]
    assert "weak / full + CRF (%)" not in lines  # recorded without the test-time CRF
    runs["seed-1"]["seg"]["ratio_crf"] = 0.9
    lines = {line.split(" | ")[0].strip("| "): line for line in report.spread_table(runs).splitlines()}
    assert "| – | 90.0 | – |" in lines["weak / full + CRF (%)"]
    assert "refined CAM mIoU (oracle view)" not in lines  # no run has it
    assert "±\u00a0–" in report.spread_table({"one": runs["seed-0"]})  # no spread from one run


def test_class_spread_table_over_runs_with_the_per_class_keys():
    def run(weak, full, body):
        return {"dataset": {"class_names": ["background", "a", "b"], "classes": [{"id": 1, "group": 0}, {"id": 2, "group": 0}]},
                "pseudo": {"cpmc_crf": {"pathology_by_class": {"1": {"recall_body": body}}}},
                "seg": {"wsss": {"labels": "cpmc_crf", "iou": weak}, "full": {"iou": full}}}  # fmt: skip

    runs = {"s0": run([90.0, 80.0, 50.0], [95.0, 82.0, 90.0], 60.0),
            "s1": run([90.0, 70.0, 60.0], [95.0, 84.0, 90.0], 40.0),
            "old": {"dataset": {}, "seg": {"wsss": {"miou": 1.0}}}}  # fmt: skip
    lines = report.class_spread_table(runs).splitlines()
    assert lines[0] == "| class | body group | IoU lost: s0 | IoU lost: s1 | mean ± sd | labels: body, mean |"
    assert lines[2] == "| b | 0 | 40.0 | 30.0 | 35.0\u00a0±\u00a07.1 | – |"  # the larger mean loss first
    assert lines[3] == "| a | 0 | 2.0 | 14.0 | 8.0\u00a0±\u00a08.5 | 50.0 |"
    assert report.class_spread_table({"old": runs["old"]}) == ""


def test_group_loss_table_splits_the_loss_by_body_group_size():
    def run(weak, full, body, groups):
        classes = [{"id": c, "group": g} for c, g in enumerate(groups, 1)]
        return {"dataset": {"class_names": ["background", *"abcde"[: len(groups)]], "classes": classes},
                "pseudo": {"cpmc_crf": {"pathology_by_class": {str(c): {"recall_body": b} for c, b in body.items()}}},
                "seg": {"wsss": {"labels": "cpmc_crf", "iou": weak}, "full": {"iou": full}}}  # fmt: skip

    runs = {
        "s1": run([90.0, 60.0, 70.0, 80.0, 85.0, None], [95.0, 90.0, 90.0, 90.0, 90.0, 90.0],
                  {1: 98.0, 2: 40.0, 3: 60.0, 4: 90.0, 5: 80.0}, [0, 0, 0, 1, 1]),
        "few": run([90.0, 80.0], [92.0, 81.0], {1: 70.0}, [0]),  # no shared body: no label columns
        "old": {"dataset": {}, "seg": {"wsss": {"miou": 1.0}}},
    }  # fmt: skip
    lines = report.group_loss_table(runs).splitlines()
    assert lines[0] == ("| setting | classes | IoU lost: groups of 3 | IoU lost: groups of 2 | IoU lost: groups of 1 "
                        "| labels: body, best of its group | labels: body, its siblings |")  # fmt: skip
    # groups of 3: lost 30, 20, 10; of 2: 5 (and a class absent from val); best 98 and 90, siblings 40, 60, 80
    assert lines[2] == "| s1 | 5 | 10.0 to 30.0 | 5.0 to 5.0 | – | 94.0 | 60.0 |"
    assert lines[3] == "| few | 1 | – | – | 1.0 to 1.0 | – | – |"
    assert len(lines) == 4 and report.group_loss_table({"old": runs["old"]}) == ""


def test_pipelines_table_sets_the_paper_only_pipeline_beside_the_default_on_shared_runs():
    def m(labels: float, network: float) -> dict:
        return {"pseudo": {"cpmc_crf": {"miou": labels, "ignore_frac": 0.1}}, "seg": {"wsss": {"miou_crf": network}}}

    runs = {
        "default-a-seed-0": m(80.0, 70.0), "paper-a-seed-0": m(78.0, 67.0),
        "default-b-seed-0": m(82.0, 72.0), "paper-b-seed-0": m(81.0, 71.0),
        "default-c-seed-0": m(99.0, 99.0),  # no paper-only run: left out of both columns
    }  # fmt: skip
    table = report.pipelines_table(runs).replace("\xa0", " ")
    assert "Over the 2 runs both pipelines finished" in table
    assert "| pseudo labels + CRF (labelled pixels) | 79.5 ± 2.1 | 81.0 ± 1.4 | +1.5 ± 0.7 |" in table
    assert "| pseudo labels: ignored (%) | 10.0 ± 0.0 | 10.0 ± 0.0 | +0.0 ± 0.0 |" in table
    assert "| network on pseudo labels + CRF | 69.0 ± 2.8 | 71.0 ± 1.4 | +2.0 ± 1.4 |" in table
    assert "weak / full" not in table  # a number no run has is left out
    assert report.pipelines_table({"default-a-seed-0": m(80.0, 70.0)}) == ""
