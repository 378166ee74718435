"""Every component of the default is labelled by origin, and the test family measures the added ones."""

from __future__ import annotations

from cpmc_lib.components import COMPONENTS, ORIGINS
from cpmc_lib.config import Config
from cpmc_lib.report import additions_table
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
    assert rows["part-anchored class assignment"].endswith("| 0.0 ± 1.4 | 1 of 2 |")  # +1 and -1
    assert rows["both label additions (the default against the paper-only pipeline)"].endswith("| 2.0 ± – | 1 of 1 |")
    assert "not recorded" in rows["negative prototypes in the labels"]
    assert rows["prototype CAM"].endswith("| – | – |")  # the paper's own steps are not switched off
    assert "not recorded" in additions_table({})
