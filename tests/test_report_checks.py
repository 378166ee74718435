"""The run's claims in ``cpmc_lib.report.checks``: the headline and CPMC's promises."""


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
    assert "oracle threshold, CPMC scores +12.5 mIoU over the classifier CAM and +7.5 over" in text
    free = {k: {**v, "gt_free": {"miou": v["miou"] - d}} for (k, v), d in zip(metrics["cams"].items(), (10, 1, 2), strict=True)}
    gt_free = headline(dict(metrics, cams=free))  # the operating point first, the oracle view beside it
    assert "(ground-truth-free), CPMC scores +20.5 mIoU over the classifier CAM and +6.5 over" in gt_free
    assert "oracle threshold, +12.5 and +7.5." in gt_free
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


def _run(cam, proto, cpmc, body=(70.0, 77.0), context=(12.0, 11.0), distractor=(24.0, 23.0), ratio=0.9,
         curve=(80.0, 80.3, 80.4), rule="otsu", cut=0.5):  # fmt: skip
    def path(b, c, d):
        return {"recall_body": b, "fp_context": c, "fp_distractor": d}

    def free(miou, *p):  # the map as the pipeline cuts it (what the promises read); oracle view 5 higher
        return {"miou": miou + 5, "threshold": 0.4, "gt_free": {"miou": miou, **({"pathology": path(*p)} if p else {})}}

    return {
        "cams": {"cam": free(cam), "refined": free(cam + 1),
                 "proto": free(proto, body[0], context[0], distractor[0]),
                 "cpmc": {**free(cpmc, body[1], context[1], distractor[1]), "miou": cpmc + cut}},
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
    assert ok["GT-free cut within 1"]["margin"] == 0.5 and "at the ground-truth-free decision" in ok["CPMC >= proto + 3"]["detail"]
    # the oracle view, each map at its best threshold, is another claim set (5 points higher here)
    oracle = {p["claim"]: p for p in promises(_run(50.0, 60.0, 64.0, cut=5.0), view="oracle")}
    assert oracle["CPMC >= CAM + 10"]["margin"] == 4.0 and "GT-free cut within 1" not in oracle
    assert "body recall >= proto + 5" not in oracle  # no pathology at the best threshold in this run
    costly = {p["claim"]: p for p in promises(_run(50.0, 60.0, 64.0, cut=3.0))}["GT-free cut within 1"]
    assert not costly["holds"] and costly["margin"] == -2.0
    older = _run(50.0, 60.0, 64.0)  # a record from before the ground-truth-free scores: no map claims
    older["cams"] = {k: {"miou": v["miou"], "threshold": 0.3} for k, v in older["cams"].items()}
    assert "CPMC >= CAM + 10" not in {p["claim"] for p in promises(older)}

    bad = {p["claim"]: p for p in promises(_run(50.0, 60.0, 59.0, distractor=(24.0, 25.5), ratio=0.85,
                                                 curve=(80.0, 81.0, 82.0), rule="oracle"))}  # fmt: skip
    assert not bad["CAM < proto < CPMC"]["holds"] and not bad["CPMC >= proto + 3"]["holds"]
    assert bad["distractor FP <= proto"]["margin"] == -1.5 and not bad["distractor FP <= proto"]["holds"]
    # a failed claim's sentence states what was measured, not the claim
    assert "distractor labelled object 25.5 > prototype CAM's 24.0" in bad["distractor FP <= proto"]["detail"]
    assert "weak / full 0.850 < 0.88" in bad["weak/full >= 0.88"]["detail"]
    assert "CAM 50.0, prototype CAM 60.0, CPMC 59.0, not in that order" in bad["CAM < proto < CPMC"]["detail"]
    assert "reads the ground truth" in bad["GT-free pseudo labels"]["detail"]
    assert "(not < 0.5)" in bad["ceiling converged"]["detail"]
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
        "CAM < proto < CPMC", "CPMC >= CAM + 10", "CPMC >= proto + 3", "GT-free cut within 1",
        "body recall >= proto + 5", "context FP <= proto", "distractor FP <= proto",
    }  # fmt: skip


def test_promise_tables_name_where_and_by_how_much_a_claim_fails():
    from cpmc_lib.report import promise_summary, promise_table

    runs = {"a": _run(50.0, 60.0, 64.0), "b": _run(50.0, 60.0, 62.0, context=(12.0, 14.0))}
    table = promise_table(runs)
    table = table.replace("\u00a0", " ")  # a cell's mark and margin do not break apart
    assert "| a | ✓ +4.0 | ✓ +4.0 | ✓ +1.0 |" in table and "| b | ✓ +2.0 | ✓ +2.0 | ✗ -1.0 |" in table
    summary = promise_summary(runs)
    assert "**CPMC >= proto + 3** holds on 1 of 2; fails on b (-1.0)." in summary
    assert "**context FP <= proto** holds on 1 of 2; fails on b (-2.0)." in summary
    assert "**CPMC >= CAM + 10** holds on 2 of 2." in summary
    # a failure too small for one decimal keeps two, so it never reads as a failure of -0.0
    runs["c"] = _run(50.0, 60.0, 64.0, context=(12.0, 12.03))
    assert "fails on b (-2.0), c (-0.03)." in promise_summary(runs)
    assert "✗\u00a0-0.03" in promise_table(runs)
    # the landing page's lines for a family: only the failing promises, each with its worst run
    from cpmc_lib.report import family_limits, limits

    lines = family_limits(runs).splitlines()
    assert "  - **context FP <= proto** holds on 1 of 3 runs of the test family; by most on b (-2.0)" in lines
    assert not any("CPMC >= CAM + 10" in line for line in lines)
    assert family_limits({"a": runs["a"]}) == ""
    box = limits(runs["a"], test_runs=runs)  # the landing page's box carries the family's failures
    assert "on the test family" in box and lines[0] in box.splitlines()
    assert "test family" not in limits(runs["a"])


def test_limits_box_names_the_failing_promises_and_the_additions():
    from cpmc_lib.components import COMPONENTS
    from cpmc_lib.report import limits

    good = limits(_run(50.0, 60.0, 64.0))
    assert good.startswith(":::{admonition}") and good.endswith(":::")
    assert "none: every promise holds on this run" in good
    assert all(c.name in good for c in COMPONENTS if c.origin == "book" and c.variant != "paper")
    bad = limits(_run(50.0, 60.0, 64.0, distractor=(24.0, 25.5)))
    assert "**distractor FP <= proto** fails (-1.5): distractor labelled object 25.5" in bad
    assert "every promise holds" not in bad and "not comparable with the ratios the papers report on VOC" in bad
