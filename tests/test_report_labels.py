"""The pseudo-label tables of ``cpmc_lib.report.labels``."""

from test_report_checks import _run  # a metrics.json of a run, for the promise checks

from cpmc_lib import report


def test_label_zone_table_gives_each_band_its_labels_and_network():
    from cpmc_lib.report import label_zone_table

    runs = {"none": _run(50.0, 60.0, 64.0), "0.15-1.0": _run(50.0, 60.0, 64.0, ratio=0.92)}
    runs["0.15-1.0"]["pseudo"]["cpmc_crf"].update(ignore_frac=0.066, miou_bg=61.5)
    table = label_zone_table(runs)
    assert "| none | 72.0 | 0.0 | – | 70.0 | 90.0 |" in table  # a record from before miou_bg: a dash
    assert "| 0.15-1.0 | 72.0 | 6.6 | 61.5 | 70.0 | 92.0 |" in table  # coverage beside the ignored share


def test_label_variants_table_and_negatives_line():
    patho = {"recall_body": 70.0, "recall_atypical": 50.0, "fp_context": 4.0, "fp_distractor": 15.0}
    table = report.label_variants_table("negative prototypes", {
        "off": {"miou_crf": 82.4, "ignore_frac_crf": 0.066},
        "on": {"miou_crf": 84.7, "ignore_frac_crf": 0.091, "miou_bg_crf": 75.2, "pathology_crf": patho},
    })  # fmt: skip
    lines = table.splitlines()
    assert lines[0].startswith("| negative prototypes | mIoU + CRF | ignored (%) | ignored as background | body recall |")
    assert lines[2] == "| off | 82.4 | 6.6 | – | – | – | – | – |"  # no diagnostic masks: dashes
    assert lines[3] == "| on | 84.7 | 9.1 | 75.2 | 70.0 | 50.0 | 4.0 | 15.0 |"
    assert report.negatives_line({"threshold_rule": "otsu"}) == ""  # negatives off
    line = report.negatives_line({"negatives": {}, "negative_firing": {"a": 0.06}})
    assert line == "negative prototypes: none; fired on images without them: a 0.06 %"


def test_every_pseudo_label_miou_of_the_method_table_carries_its_ignored_share():
    from cpmc_lib.report import method_labels_table

    results = {m: {"miou": 70.0 + i, "ignore_frac": 0.1 * i, "miou_crf": 72.0 + i, "ignore_frac_crf": 0.05 * i,
                   "miou_bg_crf": 60.0 + i, "pathology_crf": {"recall_body": 80.0, "fp_context": 3.0}}
               for i, m in enumerate(("cam", "cpmc"))}  # fmt: skip
    rows = method_labels_table(results).splitlines()[2:]
    assert rows[1] == "| cpmc | 71.0 (10.0 % ignored) | 73.0 (5.0 % ignored) | 61.0 | 80.0 | 3.0 |"
    assert rows[0].startswith("| cam | 70.0 (0.0 % ignored) | 72.0 (0.0 % ignored) |")
