"""The explorer builds headlessly, its callbacks recompute maps and scores, and settings matter."""

import pytest
import torch

from cpmc_lib.store import RunStore
from cpmc_lib.widgets import METHODS, Explorer


@pytest.fixture(scope="module")
def explorer(tiny_pipeline):
    cfg, _ = tiny_pipeline
    return Explorer(cfg, RunStore.for_config(cfg), n_images=6)


def test_maps_are_normalised_over_present_classes(explorer):
    for method in METHODS:
        maps = explorer.maps(method)
        assert maps.shape == (6, 4, 64, 64)
        absent = explorer.label == 0
        assert torch.all(maps[absent] == 0)
        assert maps.max() <= 1.0 + 1e-6 and maps.min() >= 0


def test_widget_callbacks_update_scores_and_figure(explorer):
    box = explorer.widget()
    ws = explorer._widgets
    assert box.children and "mIoU" in ws["score"].value
    ws["method"].value = "cam"
    low = explorer.update()
    assert "<b>cam</b>" in ws["score"].value
    ws["threshold"].value = 0.9  # the observer recomputes: a high threshold labels less foreground
    high = explorer.update()
    assert high["recall"] <= low["recall"]
    before = ws["out"].value
    ws["image"].value = 3  # another image: the overlay is redrawn
    assert ws["out"].value[:4] == b"\x89PNG" and ws["out"].value != before


def test_settings_change_the_calibrated_map(explorer):
    plain = explorer.maps("cpmc", explorer.settings(use_fn=False, use_fp=False))
    assert torch.allclose(
        plain, explorer.maps("proto", explorer.settings(use_fn=False, use_fp=False)), atol=1e-5
    )
    with pytest.raises(ValueError, match="unknown explorer settings"):
        explorer.settings(beta=3)


def test_static_summary_has_every_method(explorer):
    fig = explorer.static_summary()
    titles = [ax.get_title() for ax in fig.axes]
    assert all(any(t.startswith(m + ":") for t in titles) for m in METHODS)


def test_ablation_rows_use_best_thresholds(explorer):
    from cpmc_lib.widgets import ABLATION

    rows = explorer.ablation({k: ABLATION[k] for k in ("classifier CAM", "+ FP local prototypes")})
    assert [r["variant"] for r in rows] == ["classifier CAM", "+ FP local prototypes"]
    direct = explorer.score(explorer.maps("cam"))
    assert rows[0]["miou"] == direct["miou"] and 0 < rows[0]["threshold"] < 1
