"""The explorer builds headlessly, its callbacks recompute maps and scores, and settings matter."""

import numpy as np
import pytest
import torch

from cpmc_lib.explorer import METHODS, Explorer
from cpmc_lib.store import RunStore


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
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]
    for m in METHODS:  # each map titled with its own best threshold and the mIoU there
        best = explorer.score(explorer.maps(m))
        assert f"{m}: mIoU {best['miou']:.1f} @ {best['threshold']:.2f}" in titles, titles


def test_ablation_rows_use_best_thresholds(explorer):
    from cpmc_lib.sweep import ablation_rows

    ablation = ablation_rows()  # the book's ablation, papermill_runs/ablation.yaml
    rows = explorer.ablation({k: ablation[k] for k in ("classifier CAM", "+ FP local prototypes")})
    assert [r["variant"] for r in rows] == ["classifier CAM", "+ FP local prototypes"]
    direct = explorer.score(explorer.maps("cam"))
    assert rows[0]["miou"] == direct["miou"] and 0 < rows[0]["threshold"] < 1


def test_kernel_free_explorer_precomputes_every_setting(explorer):
    data = explorer.grid(images=(0, 1), thresholds=(0.2, 0.5))
    keys = {"cam|", "refined|", "proto|", "cpmc|FN + FP", "cpmc|FN only", "cpmc|FP only", "cpmc|neither"}
    assert set(data["score"]) == keys == set(data["mask"])
    assert all(len(data["mask"][k]) == 2 and len(data["mask"][k][0]) == 2 for k in keys)
    assert data["mask"]["cam|"][0][0].startswith("data:image/png;base64,")
    # the same numbers as the live explorer at that threshold
    direct = explorer.score(explorer.maps("cam"), 0.5)
    assert data["score"]["cam|"][1]["miou"] == round(direct["miou"], 1)
    # switching the local prototypes off gives the prototype CAM (scores agree)
    assert data["score"]["cpmc|neither"] == data["score"]["proto|"]
    page = explorer.html(data, uid="t1")
    assert 'id="t1-threshold"' in page and "<script" in page
    assert "src=\"http" not in page and "require" not in page  # nothing to fetch


def test_ablation_folds_split_the_cached_images(explorer):
    rows = explorer.ablation({"classifier CAM": ("cam", {})}, folds=3)
    assert len(rows[0]["miou_folds"]) == 3 and all(0 <= m <= 100 for m in rows[0]["miou_folds"])


def test_image_scores_per_image(explorer):
    maps = explorer.maps("cpmc")
    scores = explorer.image_scores(maps, 0.3)
    assert len(scores) == 6 and all(0 <= s["miou"] <= 100 for s in scores)
    for i, s in enumerate(scores):  # by hand: IoU over the classes in the mask or the ground truth
        gt = np.asarray(explorer.samples[i]["mask"])
        valid = gt != 255
        p, g = explorer.mask(maps, i, 0.3)[valid], gt[valid]
        ious = [((p == c) & (g == c)).sum() / ((p == c) | (g == c)).sum() for c in np.union1d(p, g)]
        assert s["miou"] == pytest.approx(100 * np.mean(ious))
        assert s["object_recall"] == pytest.approx(100 * (p[g > 0] == g[g > 0]).mean(), nan_ok=True)
        assert s["background_fp"] == pytest.approx(100 * (p[g == 0] > 0).mean(), nan_ok=True)


def test_cpmc_maps_run_once_per_setting_and_ablation_rows_are_reused(explorer, monkeypatch):
    from cpmc_lib import cpmc
    from cpmc_lib.cam_methods import make_cam_method, normalize_cams

    direct = {m: make_cam_method(m, explorer.model, explorer.cfg).from_output(explorer.out, explorer.img, explorer.label)
              for m in ("refined", "proto", "cpmc")}  # fmt: skip
    calls = []
    real = cpmc.cpmc_maps
    monkeypatch.setattr(cpmc, "cpmc_maps", lambda *a, **k: calls.append(1) or real(*a, **k))
    explorer._steps.clear()
    explorer._rows.clear()
    for m in ("refined", "proto", "cpmc"):  # the same maps as each method alone, from one call
        up = torch.nn.functional.interpolate(
            direct[m].float(), size=explorer.img.shape[-2:], mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(explorer.maps(m), normalize_cams(up, explorer.label))
    explorer.region_stats()
    assert len(calls) == 1
    variants = {"full": ("cpmc", {}), "no FP": ("cpmc", {"use_fp": False}), "default": ("cpmc", {})}
    rows = explorer.ablation(variants, folds=2)
    assert len(calls) == 2  # "default" is "full" again: scored once; "no FP" is one more call
    assert [r["variant"] for r in rows] == ["full", "no FP", "default"]
    assert {k: v for k, v in rows[0].items() if k != "variant"} == {k: v for k, v in rows[2].items() if k != "variant"}
    explorer.steps(explorer.settings(iterations=0))  # another setting replaces "no FP", the run's own stays
    assert len(explorer._steps) == 2 and explorer._key(explorer.cfg) in explorer._steps


def test_teaching_index_follows_its_rule(explorer, monkeypatch):
    steps = dict(explorer.steps())
    assert 0 <= explorer.teaching_index() < len(explorer.samples)
    # without diagnostic masks: two classes, and FN and FP regions of min_cells cells each
    monkeypatch.setattr(explorer, "samples", [{k: v for k, v in s.items() if k != "diag"} for s in explorer.samples])
    label = torch.zeros_like(explorer.label)
    label[:, 0] = 1
    label[[1, 3], 1] = 1  # images 1 and 3 hold two classes
    monkeypatch.setattr(explorer, "label", label)
    fn, fp = torch.zeros_like(steps["fn"]), torch.zeros_like(steps["fp"])
    fn[3, 1, :2, :2], fp[3, 2, :2, :2], fp[1, 1, :2, :2] = True, True, True  # image 1 has FP cells only
    fp[2, 1, :2, :2], fn[2, 1, :2, :2] = True, True  # image 2: both regions, one class
    monkeypatch.setattr(explorer, "steps", lambda cfg=None: {**steps, "fn": fn, "fp": fp})
    assert explorer.teaching_index() == 3
    assert explorer.teaching_index(min_cells=5) == 1  # regions of 4 cells are too small: two classes win
    fn[3, 1, 1, 1] = False
    assert explorer.teaching_index() == 1  # image 3's FN region has 3 cells: the first with two criteria
    label[1, 1] = 0
    assert explorer.teaching_index() == 2  # image 1 meets one now, images 2 and 3 two: the first of them
    label[3, 1], fp[:] = 0, False
    fn[:] = False
    assert explorer.teaching_index() == 0  # none met: the first image


def test_kernel_free_explorer_survives_scores_without_a_value(explorer, monkeypatch):
    import json
    import re

    # a map that predicts no object has no precision: NaN, which JSON cannot carry
    monkeypatch.setattr(explorer, "score", lambda maps, t=None, indices=None: {
        "miou": 10.0, "precision": float("nan"), "recall": 0.0, "threshold": t})  # fmt: skip
    data = explorer.grid(images=(0,), thresholds=(0.2, 0.5))
    assert data["score"]["cam|"][0] == {"miou": 10.0, "precision": None, "recall": 0.0}
    page = explorer.html(data, uid="t2")
    payload = re.search(r'<script type="application/json" id="t2-data">(.*?)</script>', page, re.S)[1]
    assert json.loads(payload)["score"]["cam|"][1]["precision"] is None  # valid JSON for the page's script
