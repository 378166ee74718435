from cpmc_lib import report
from cpmc_lib.report import fmt, markdown_table, method_table


def test_markdown_table_formats_and_fills_missing():
    table = markdown_table([{"a": 1.234, "b": "x"}, {"a": float("nan")}], ["a", "b"])
    lines = table.splitlines()
    assert lines[0] == "| a | b |"
    assert lines[2] == "| 1.2 | x |"
    assert lines[3] == "| – | – |"
    assert fmt(3) == "3" and fmt(0.456, 2) == "0.46"


def test_method_table_includes_diagnostics():
    res = {
        "cam": {
            "miou": 40.0,
            "threshold": 0.3,
            "precision": 60.0,
            "recall": 50.0,
            "pathology": {"recall_body": 30.0, "recall_part": 80.0, "act_context": 0.456, "act_neutral": 0.1},
        },
        "gradcam": {"miou": 35.0, "threshold": 0.25, "precision": 55.0, "recall": 45.0},
    }
    main, diag = method_table(res).split("\n\n*Where the maps fail")
    header, _, cam, grad = main.splitlines()
    assert header == "| method | mIoU | threshold | precision | recall |"
    assert cam == "| cam | 40.0 | 0.30 | 60.0 | 50.0 |" and grad.startswith("| gradcam | 35.0 | 0.25 |")
    dheader, _, dcam, dgrad = diag.split("\n\n")[1].splitlines()
    assert "body recall" in dheader and "context act." in dheader
    assert dcam.startswith("| cam | 30.0 | 80.0 |") and "0.46" in dcam and dgrad.startswith("| gradcam | – |")
    # without diagnostics: one table
    assert "\n\n" not in method_table(res, pathology=False)


def test_ablation_verdict_reports_help_and_harm():
    from cpmc_lib.report import ablation_verdict

    text = ablation_verdict({
        "classifier CAM": 40.0, "+ context refinement": 45.0, "+ prototype CAM": 44.0,
        "+ FN local prototypes": 44.2, "+ FP local prototypes": 48.0, "full CPMC (FN + FP)": 47.0,
    })  # fmt: skip
    assert "refinement over the classifier CAM: helps (+5.0)" in text
    assert "over the refined CAM: **hurts** (-1.0)" in text
    assert "FN local prototypes over the prototype CAM: no measurable effect (+0.2)" in text
    assert "+7.0 over the classifier CAM, +3.0 over the prototype CAM" in text


def test_headline_summarises_every_stage_of_a_metrics_file():
    from cpmc_lib.report import headline

    metrics = {
        "cams": {"cam": {"miou": 40.0}, "proto": {"miou": 45.0}, "cpmc": {"miou": 52.5}},
        "pseudo": {"cpmc": {"miou": 50.0}, "cpmc_crf": {"miou": 53.0}},
        "seg": {"wsss": {"miou": 60.0}, "full": {"miou": 75.0}, "ratio": 0.8},
    }
    text = headline(metrics)
    assert "| CAM (train split) | CPMC (calibrated) | 52.5 |" in text
    assert "| pseudo labels (train split) | cpmc pseudo labels + dense CRF | 53.0 |" in text
    assert "| segmentation (val split) | trained on ground truth (ceiling) | 75.0 |" in text
    assert "+12.5 mIoU over the classifier CAM and +7.5 over" in text
    assert "changes cpmc pseudo-label mIoU by +3.0" in text and "80.0 % of full supervision" in text
    assert "over its last two epochs" not in text  # no learning curve, no convergence line
    flat = dict(metrics, seg={**metrics["seg"], "full": {"miou": 75.0, "curve": [70.0, 74.7, 74.9, 75.0]}})
    assert "moved +0.3 over its last two epochs of 4, converged by the < 0.5 reading" in headline(flat)
    rising = dict(metrics, seg={**metrics["seg"], "full": {"miou": 75.0, "curve": [70.0, 73.0, 75.0]}})
    assert "moved +5.0 over its last two epochs of 3, still moving" in headline(rising)
    assert "ignored" not in text  # labels without an ignore zone say nothing about it
    banded = dict(metrics, pseudo={**metrics["pseudo"], "cpmc_crf": {"miou": 53.0, "ignore_frac": 0.066}})
    assert "| cpmc pseudo labels + dense CRF (6.6 % ignored) | 53.0 |" in headline(banded)
    assert "by +3.0 (each scored on its own labelled pixels)." in headline(banded)
    assert "by +3.0." in text
    # negative prototypes and CRF scores of both networks (pseudo.negatives, segmentation.test_crf)
    crf = dict(metrics, pseudo={**metrics["pseudo"], "negatives": {"black-disc": 4}},
               seg={"wsss": {"miou": 60.0, "miou_crf": 66.0}, "full": {"miou": 75.0, "miou_crf": 80.0},
                    "ratio": 0.8, "ratio_crf": 0.825})  # fmt: skip
    text_crf = headline(crf)
    assert "| trained on pseudo labels + dense CRF | 66.0 |" in text_crf and "black-disc" not in text_crf
    assert "80.0 % of full supervision, 82.5 % with the dense CRF on both networks" in text_crf
    # a run that stopped at the CAM stage has no pseudo or segmentation lines
    short = headline({"cams": metrics["cams"]})
    assert "pseudo" not in short and "full supervision" not in short


def test_direction_follows_the_sign():
    from cpmc_lib.report import direction

    assert (
        direction(0.08) == "raises" and direction(-0.08) == "lowers" and direction(0.0) == "leaves unchanged"
    )
    assert direction(0.3, up="helps", down="hurts", flat="does nothing", tol=0.5) == "does nothing"
    assert direction(-0.6, up="helps", down="hurts", tol=0.5) == "hurts"
    assert direction(float("nan")) == "leaves unchanged"
    assert (
        direction(0.004, digits=2) == "leaves unchanged" and direction(0.02, digits=1) == "leaves unchanged"
    )
    assert direction(0.06, digits=1) == "raises"


def test_compare_follows_the_printed_numbers():
    from cpmc_lib.report import compare

    assert compare(0.14, 0.16, digits=1) == "raises"  # prints 0.1 -> 0.2
    assert compare(7.52, 7.48, digits=1) == "leaves unchanged"  # prints 7.5 -> 7.5
    assert compare(80.3, 73.9, up="helps", down="hurts") == "hurts"


def _run(cam, proto, cpmc, body=(70.0, 77.0), context=(12.0, 11.0), distractor=(24.0, 23.0), ratio=0.9,
         curve=(80.0, 80.3, 80.4), rule="otsu"):  # fmt: skip
    def path(b, c, d):
        return {"recall_body": b, "fp_context": c, "fp_distractor": d}

    return {
        "cams": {"cam": {"miou": cam, "threshold": 0.3}, "refined": {"miou": cam + 1, "threshold": 0.3},
                 "proto": {"miou": proto, "threshold": 0.4, "pathology": path(body[0], context[0], distractor[0])},
                 "cpmc": {"miou": cpmc, "threshold": 0.4, "pathology": path(body[1], context[1], distractor[1])}},
        "pseudo": {"threshold_rule": rule, "cpmc": {"miou": 70.0}, "cpmc_crf": {"miou": 72.0}},
        "seg": {"ratio": ratio, "wsss": {"miou": 70.0}, "full": {"miou": 80.0, "curve": list(curve)}},
    }  # fmt: skip


def test_promises_hold_and_fail_with_their_margins():
    from cpmc_lib.report import promises

    ok = {p["claim"]: p for p in promises(_run(50.0, 60.0, 64.0))}
    assert all(p["holds"] for p in ok.values())
    assert ok["CPMC >= CAM + 10"]["margin"] == 4.0 and ok["CPMC >= proto + 3"]["margin"] == 1.0
    assert ok["body recall >= proto + 5"]["margin"] == 2.0 and ok["context FP <= proto"]["margin"] == 1.0
    assert abs(ok["ceiling converged"]["margin"] - 0.1) < 1e-9  # moved +0.4 over its last two epochs

    bad = {p["claim"]: p for p in promises(_run(50.0, 60.0, 59.0, distractor=(24.0, 25.5), ratio=0.85,
                                                 curve=(80.0, 81.0, 82.0), rule="oracle"))}  # fmt: skip
    assert not bad["CAM < proto < CPMC"]["holds"] and not bad["CPMC >= proto + 3"]["holds"]
    assert bad["distractor FP <= proto"]["margin"] == -1.5 and not bad["distractor FP <= proto"]["holds"]
    assert not bad["GT-free pseudo labels"]["holds"] and bad["GT-free pseudo labels"]["margin"] is None
    assert not bad["weak/full >= 0.88"]["holds"] and not bad["ceiling converged"]["holds"]
    # with both networks scored after the dense CRF, the claim reads that ratio (the field's protocol)
    crf = _run(50.0, 60.0, 64.0, ratio=0.85)
    crf["seg"]["ratio_crf"] = 0.89
    check = {p["claim"]: p for p in promises(crf)}["weak/full >= 0.88"]
    assert check["holds"] and abs(check["margin"] - 1.0) < 1e-9 and "0.850 without" in check["detail"]
    crf["seg"]["ratio_crf"] = 0.87
    assert not {p["claim"]: p for p in promises(crf)}["weak/full >= 0.88"]["holds"]
    # a run that stopped at the CAM stage has no pseudo-label or segmentation claims
    assert {p["claim"] for p in promises({"cams": _run(50.0, 60.0, 64.0)["cams"]})} == {
        "CAM < proto < CPMC", "CPMC >= CAM + 10", "CPMC >= proto + 3", "body recall >= proto + 5",
        "context FP <= proto", "distractor FP <= proto",
    }  # fmt: skip


def test_promise_tables_name_where_and_by_how_much_a_claim_fails():
    from cpmc_lib.report import promise_summary, promise_table, settings_tables

    runs = {"a": _run(50.0, 60.0, 64.0), "b": _run(50.0, 60.0, 62.0, context=(12.0, 14.0))}
    table = promise_table(runs)
    table = table.replace("\u00a0", " ")  # a cell's mark and margin do not break apart
    assert "| a | ✓ +4.0 | ✓ +4.0 | ✓ +1.0 |" in table and "| b | ✓ +2.0 | ✓ +2.0 | ✗ -1.0 |" in table
    summary = promise_summary(runs)
    assert "**CPMC >= proto + 3** holds on 1 of 2; fails on b (-1.0)." in summary
    assert "**context FP <= proto** holds on 1 of 2; fails on b (-2.0)." in summary
    assert "**CPMC >= CAM + 10** holds on 2 of 2." in summary
    tables = settings_tables(runs)
    assert "| b | 50.0 | 51.0 | 60.0 | 62.0 | 0.40 |" in tables
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


def test_label_zone_table_gives_each_band_its_labels_and_network():
    from cpmc_lib.report import label_zone_table

    runs = {"none": _run(50.0, 60.0, 64.0), "0.15-1.0": _run(50.0, 60.0, 64.0, ratio=0.92)}
    runs["0.15-1.0"]["pseudo"]["cpmc_crf"]["ignore_frac"] = 0.066
    table = label_zone_table(runs)
    assert "| none | 72.0 | 0.0 | 70.0 | 90.0 |" in table
    assert "| 0.15-1.0 | 72.0 | 6.6 | 70.0 | 92.0 |" in table


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


def test_label_variants_table_and_negatives_line():
    patho = {"recall_body": 70.0, "recall_atypical": 50.0, "fp_context": 4.0, "fp_distractor": 15.0}
    table = report.label_variants_table("negative prototypes", {
        "off": {"miou_crf": 82.4, "ignore_frac_crf": 0.066},
        "on": {"miou_crf": 84.7, "ignore_frac_crf": 0.091, "pathology_crf": patho},
    })  # fmt: skip
    lines = table.splitlines()
    assert lines[0].startswith("| negative prototypes | mIoU + CRF | ignored (%) | body recall |")
    assert lines[2] == "| off | 82.4 | 6.6 | – | – | – | – |"  # no diagnostic masks: dashes
    assert lines[3] == "| on | 84.7 | 9.1 | 70.0 | 50.0 | 4.0 | 15.0 |"
    assert report.negatives_line({"threshold_rule": "otsu"}) == ""  # negatives off
    line = report.negatives_line({"negatives": {}, "negative_firing": {"a": 0.06}})
    assert line == "negative prototypes: none; fired on images without them: a 0.06 %"
