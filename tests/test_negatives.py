"""Negative prototypes (cpmc_lib.negatives): what a class's classifier fires on without it."""

from __future__ import annotations

import numpy as np
import torch

from cpmc_lib import negatives, pseudo
from cpmc_lib.datasets import build_dataset
from cpmc_lib.io import read_mask_png


def _unit(*idx: int, dim: int = 4) -> torch.Tensor:
    return torch.eye(dim)[list(idx)]


def test_negative_cells_come_only_from_images_without_the_class_where_it_fires():
    cam = torch.zeros(2, 2, 2, 2)
    cam[0, 0, 0, 0] = 9.0  # image 0 has class 0: its firing is not negative
    cam[1, 0, 1, 1] = 6.0  # image 1 lacks class 0 and fires at (1, 1) ...
    cam[1, 0, 0, 1] = 2.0  # ... and weakly at (0, 1): under share x peak
    feat = torch.zeros(2, 4, 2, 2)
    feat[1, 2, 1, 1] = 3.0
    label = torch.tensor([[1, 0], [0, 0]])
    cells = negatives.negative_cells(cam, feat, label, peak=torch.tensor([10.0, 10.0]), share=0.5)
    assert torch.equal(cells[0], _unit(2))  # the one cell, unit length
    assert len(cells[1]) == 0  # class 1 never fires


def test_negative_prototypes_are_unit_centres_and_need_enough_cells():
    cells = torch.cat([_unit(0).repeat(3, 1), _unit(1).repeat(2, 1)])
    centres = negatives.negative_prototypes(cells, 2)
    assert centres.shape == (2, 4)
    assert {tuple(c.tolist()) for c in centres} == {tuple(_unit(0)[0].tolist()), tuple(_unit(1)[0].tolist())}
    assert negatives.negative_prototypes(cells[:1], 2) is None


def test_negative_mask_marks_cells_nearer_the_negatives_than_the_class_itself():
    # class 1 (channel 0): confident cells look like e0, its context like e1, which the bank holds
    feat = torch.zeros(4, 1, 3)
    feat[0, 0, 0] = feat[0, 0, 1] = 1.0  # body
    feat[1, 0, 2] = 1.0  # context
    cam = torch.tensor([[[5.0, 4.0, 3.0]], [[5.0, 4.0, 3.0]]])
    bank = [_unit(1), None]
    mask = negatives.negative_mask(cam, feat, [1, 2], bank, part_share=0.7)
    assert mask[0].tolist() == [[False, False, True]]  # only the context cell
    assert not mask[1].any()  # a class without negatives keeps everything


def test_ignore_negatives_sets_only_that_class_to_ignore():
    label = np.array([[1, 1, 2, 2], [0, 1, 2, 255]], np.uint8)
    # (2 classes, 1 x 2 cells), upsampled to 2 x 4 pixels: class 2's mask covers class 1's pixels too
    mask = torch.tensor([[[False, False]], [[True, True]]])
    assert negatives.ignore_negatives(label, [1, 2], mask).tolist() == [[1, 1, 255, 255], [0, 1, 255, 255]]
    mask = torch.tensor([[[True, False]], [[False, True]]])
    assert negatives.ignore_negatives(label, [1, 2], mask).tolist() == [[255, 255, 255, 255], [0, 255, 255, 255]]
    assert negatives.ignore_negatives(label, [1, 2], torch.zeros(2, 1, 2, dtype=torch.bool)) is label


def test_firing_outliers_pick_the_classes_that_fire_far_more_often_than_the_median():
    rate = torch.tensor([0.0, 0.0, 0.0, 0.35, 0.002])
    assert negatives.firing_outliers(rate, 3.0).tolist() == [False, False, False, True, True]  # median 0
    rate = torch.tensor([0.1, 0.12, 0.5, 0.09, 0.11])  # most classes fire: only the far outlier
    assert negatives.firing_outliers(rate, 3.0).tolist() == [False, False, True, False, False]
    assert negatives.firing_outliers(rate, 10.0).tolist() == [False] * 5
    assert negatives.firing_outliers(rate, 0.0).tolist() == [True] * 5  # 0: every firing class
    assert not negatives.firing_outliers(torch.zeros(3), 0.0).any()  # none fires: none qualifies


def _labels_without_negatives(cfg, store):
    """An untrained classifier in the run (it fires at random), the stage's labels without negative
    prototypes (argmax, no CRF), those labels by image name, and the overrides they were made with."""
    from cpmc_lib.io import save_torch
    from cpmc_lib.models import build_model

    with store.stage("classifier", cfg) as st:
        torch.manual_seed(0)
        save_torch(st.path / "model.pt", build_model(cfg, pretrained=False).state_dict())
        st.result = {}
    over = {"pseudo.crf": False, "pseudo.assign": "argmax", "pseudo.method": "cam"}
    off = pseudo.run(cfg.replace(**over), store, progress=False)
    names = build_dataset(cfg, cfg.data.cam_split).names
    return off, {n: read_mask_png(pseudo.labels_dir(store) / f"{n}.png") for n in names}, over


def test_stage_negatives_only_ignore_class_pixels(tiny_cam_run):
    from cpmc_lib.stages import stage_hash

    cfg, store = tiny_cam_run
    off, before, over = _labels_without_negatives(cfg, store)
    on_cfg = cfg.replace(**over, **{"pseudo.negatives": True, "pseudo.negative_share": 0.05,
                                    "pseudo.negative_clusters": 1, "pseudo.negative_outlier": 0.0})  # fmt: skip
    on = pseudo.run(on_cfg, store, progress=False)
    assert "negatives" not in off and on["negatives"]  # some class had negative prototypes
    assert set(on["negatives"]) <= set(on["negative_firing"])  # only classes that fired on images without them
    ignored = 0
    for name, lab in before.items():
        new = read_mask_png(pseudo.labels_dir(store) / f"{name}.png")
        diff = new != lab
        assert ((lab[diff] > 0) & (lab[diff] != 255) & (new[diff] == 255)).all()  # class pixels -> ignore
        ignored += int(diff.sum())
    assert ignored > 0
    assert on["ignore_frac"] > off["ignore_frac"]
    assert stage_hash(on_cfg, "pseudo") != stage_hash(cfg.replace(**over), "pseudo")


def test_stage_without_outliers_leaves_the_labels_as_they_were(tiny_cam_run):
    cfg, store = tiny_cam_run
    off, before, over = _labels_without_negatives(cfg, store)
    guarded = cfg.replace(**over, **{"pseudo.negatives": True, "pseudo.negative_share": 0.05,
                                     "pseudo.negative_outlier": 1e9})  # fmt: skip
    on = pseudo.run(guarded, store, progress=False)
    assert on["negative_firing"] and not on["negatives"]  # classes fired, none far more than the median
    for name, lab in before.items():
        assert (read_mask_png(pseudo.labels_dir(store) / f"{name}.png") == lab).all()
    assert on["ignore_frac"] == off["ignore_frac"]
