"""Every component of the default is labelled by origin, and the test family measures the added ones."""

from __future__ import annotations

from cpmc_lib.components import COMPONENTS, ORIGINS
from cpmc_lib.config import Config
from cpmc_lib.report import additions_table, component_verdicts
from cpmc_lib.sweep import RECORDED, ROOT, load_sweep


def test_each_component_names_its_origin_keys_and_a_variant_that_exists():
    flat = {f"{s}.{k}" for s, section in Config().to_dict().items() if isinstance(section, dict) for k in section}
    for c in COMPONENTS:
        assert c.origin in ORIGINS and c.source and set(c.keys) <= flat, c
        if c.variant:
            assert c.sweep in RECORDED and RECORDED[c.sweep] == "test" and c.metric, c
            names = [p.name for p in load_sweep(ROOT / "papermill_runs" / f"{c.sweep}.yaml").points]
            assert any(n.startswith(f"{c.variant}-test-") for n in names), c
    # everything this book added is measured on the test family
    assert all(c.variant or c.within for c in COMPONENTS if c.origin == "book")


def test_additions_table_pairs_each_run_with_its_variant():
    def m(labels, net=70.0):
        return {"pseudo": {"cpmc_crf": {"miou": labels}}, "seg": {"wsss": {"miou": net, "miou_crf": net + 1}}}

    runs = {
        "test": {"default-test-0-seed-0": m(80.0), "default-test-1-seed-0": m(82.0), "paper-test-0-seed-0": m(0, 68.0)},
        "test_labels": {"no-parts-test-0-seed-0": m(79.0), "no-parts-test-1-seed-0": m(83.0)},
    }
    rows = {line.split(" | ")[0].strip("| "): line for line in additions_table(runs).replace("\xa0", " ").splitlines()}
    assert rows["part-anchored class assignment"].endswith("| +0.0 ± 1.4 | 1 of 2 |")  # +1 and -1
    assert rows["both label additions (the default against the paper-only pipeline)"].endswith("| +2.0 ± – | 1 of 1 |")
    assert "not recorded" in rows["negative prototypes in the labels"]
    assert "not recorded" in rows["prototype CAM"]  # read inside each run: these have no map numbers
    assert rows["stand-in pretraining"].endswith("| – | – |")  # not switched off on the test family
    assert "not recorded" in additions_table({})


def test_verdicts_follow_the_sign_and_spread_of_the_gains():
    def m(refined, proto, labels=80.0, ignored=0.1):
        cams = {"cam": {"gt_free": {"miou": 50.0}}, "refined": {"gt_free": {"miou": refined}},
                "proto": {"gt_free": {"miou": proto}}, "cpmc": {"gt_free": {"miou": proto}}}  # fmt: skip
        return {"cams": cams, "pseudo": {"cpmc_crf": {"miou": labels, "ignore_frac": ignored}}}

    runs = {
        "test": {"default-a-seed-0": m(52.0, 60.0), "default-b-seed-0": m(53.0, 50.0), "default-c-seed-0": m(51.0, 55.0)},
        "test_labels": {"no-parts-a-seed-0": m(0, 0, 78.0, 0.05), "no-parts-b-seed-0": m(0, 0, 79.0, 0.05)},
    }
    lines = {line.split("**")[1]: line.replace("\xa0", " ") for line in component_verdicts(runs).splitlines()}
    assert ": helps, +2.0 ± 1.0 " in lines["context refinement"]  # +2, +3, +1: above its spread
    assert "no clear effect" in lines["prototype CAM"]  # +8, -3, +4: the spread covers zero
    assert ": helps, +1.5 ± 0.7 pseudo-label mIoU" in lines["part-anchored class assignment"]
    assert "the ignored share moves +5.0 ± 0.0 points" in lines["part-anchored class assignment"]  # beside the label mIoU
    assert "not recorded (no run of `papermill_runs/test_labels.yaml`" in lines["negative prototypes in the labels"]
    runs["test"] = {"default-a-seed-0": m(40.0, 60.0), "default-b-seed-0": m(49.0, 50.0), "default-c-seed-0": m(45.0, 55.0)}
    assert "**hurts**" in component_verdicts(runs).split("context refinement")[1].splitlines()[0]  # -10, -1, -5
