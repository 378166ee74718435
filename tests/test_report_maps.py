"""The CAM-map tables of ``cpmc_lib.report.maps``: per method, and an ablation's verdict."""

from cpmc_lib.report import method_table


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
    # where each map comes from, and the oracle view named as such
    assert header == "| method | from | mIoU, oracle | oracle threshold | precision | recall |"
    assert cam == "| cam | CPMC step 1 (CAM) | 40.0 | 0.30 | 60.0 | 50.0 |"
    assert grad.startswith("| gradcam | peer, not CPMC | 35.0 | 0.25 |")
    dheader, _, dcam, dgrad = diag.split("\n\n")[1].splitlines()
    assert "body recall" in dheader and "context act." in dheader
    assert dcam.startswith("| cam | 30.0 | 80.0 |") and "0.46" in dcam and dgrad.startswith("| gradcam | – |")
    # without diagnostics: one table
    assert "\n\n" not in method_table(res, pathology=False)
    # the pipeline's own cut, when scored, comes before the oracle view
    res["cam"]["gt_free"] = {"miou": 38.5}
    header, _, cam, grad = method_table(res, pathology=False).splitlines()
    assert header.startswith("| method | from | mIoU, GT-free cut | mIoU, oracle |")
    assert cam.startswith("| cam | CPMC step 1 (CAM) | 38.5 | 40.0 |") and grad.startswith("| gradcam | peer, not CPMC | – | 35.0 |")


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
