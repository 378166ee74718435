"""The per-class and error tables of ``cpmc_lib.report.classes``."""

from cpmc_lib import report


def _patho(body, context):
    return {
        "recall_body": body,
        "recall_part": 95.0,
        "recall_atypical": 60.0,
        "fp_context": context,
        "fp_distractor": 20.0,
        "fp_neutral": 1.0,
    }


def test_error_gap_names_the_largest_shortfalls_from_the_numbers():
    weak, full = _patho(70.0, 15.0), _patho(95.0, 5.0)
    text = report.error_gap(weak, full, top=2)
    assert text.index("body recall 70.0 % (ceiling 95.0 %)") < text.index("context labelled object 15.0 %")
    assert "atypical" not in text and "distractor" not in text  # no shortfall there
    # a network better than its ceiling on a kind of pixel is not listed as losing on it
    assert "context" not in report.error_gap(_patho(70.0, 2.0), full)
    assert "within half a point" in report.error_gap(full, full)
    assert report.error_gap(None, full) == ""


def test_error_table_rows_and_label_pathologies_from_metrics():
    metrics = {
        "config": {"pseudo": {"method": "cpmc"}},
        "pseudo": {"cpmc_crf": {"pathology": _patho(72.0, 9.0)}},
        "seg": {
            "wsss": {"labels": "cpmc_crf", "pathology": _patho(70.0, 15.0)},
            "full": {"pathology": _patho(95.0, 5.0)},
        },
    }
    found = report.label_pathologies(metrics)
    assert found["pseudo"]["recall_body"] == 72.0 and found["full"]["fp_context"] == 5.0
    table = report.error_table(**found)
    assert table.count("\n| ") == 4 and "| network on pseudo labels (val) | 70.0 |" in table
    assert report.error_table(None, None, None) == ""


def test_class_table_sorts_by_the_iou_gap_and_class_gap_names_the_worst():
    names = ["background", "a", "b", "c"]
    weak_iou, full_iou = [90.0, 80.0, 50.0, 70.0], [92.0, 81.0, 85.0, 72.0]
    pseudo = {"2": {"recall_body": 40.0, "ignored_body": 30.0, "recall_atypical": 20.0}}
    weak = {"2": {"recall_body": 55.0, "recall_atypical": 35.0}}
    table = report.class_table(names, pseudo, weak, weak_iou, full_iou, groups=[None, 0, 1, 1])
    lines = table.splitlines()
    assert lines[2].startswith("| b | 1 | 40.0 (30.0) | 20.0 | 55.0 | 35.0 | 50.0 | 85.0 |")
    assert [line.split(" | ")[0] for line in lines[3:]] == ["| c", "| a"]  # gaps 2 and 1
    assert "| – (–) | – |" in lines[3]  # a class without per-class pathology
    assert report.class_table(names, pseudo, weak, None, full_iou) == ""
    # gaps 2, 1, 35, 2 -> total 40; the worst two object classes b (35) and c (2) make 37 / 40
    text = report.class_gap(names, weak_iou, full_iou, top=2)
    assert "(b, c)" in text and "92 %" in text
    assert "no IoU" in report.class_gap(names, full_iou, full_iou)
    assert report.class_gap(names[:2], weak_iou, full_iou) == ""


def test_body_groups_from_the_card():
    card = {"classes": [{"id": 2, "group": 1}, {"id": 1, "group": 0}]}
    assert report.body_groups(card) == [None, 0, 1]
    assert report.body_groups({"class_names": ["background", "cat"]}) is None
