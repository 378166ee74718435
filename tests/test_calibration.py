"""Tests of cpmc_lib.calibration: FN/FP regions and the calibrated CAM, on constructed scenes."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from cpmc_lib.calibration import (
    attached_to,
    attachment_gate,
    calibrated_cam,
    false_negative_regions,
    false_positive_regions,
    fp_suppression,
    local_prototypes,
    region_labels,
)
from cpmc_lib.prototypes import cluster_prototypes, one_hot_labels, prototype_cam

# One row of 6 pixels with 3-d features: background, object part, object body, context patch.
BG, PART, BODY, CTX = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.8, 0.0]
CTX2 = [0.9, 0.0, 0.3]  # context that looks more like background than like the object


def _feat(pixels):
    return torch.tensor(pixels).T.reshape(1, 3, 1, len(pixels))


def test_regions_by_hand():
    ref = torch.tensor([[[0, 1, 1, 0, 2]]])
    proto = torch.tensor([[[0, 0, 1, 1, 2]]])
    fn, fp = false_negative_regions(ref, proto, 3), false_positive_regions(ref, proto, 3)
    assert fn[0, :, 0].int().tolist() == [[0] * 5, [0, 1, 0, 0, 0], [0] * 5]
    assert fp[0, :, 0].int().tolist() == [[0] * 5, [0, 0, 0, 1, 0], [0] * 5]


def test_region_labels_ignore_absent_classes():
    cam = torch.tensor([[0.5, 0.5], [0.4, 0.1], [0.9, 0.9]])[None, :, None, :]
    lab = region_labels(cam, torch.tensor([[1.0, 0.0]]), bg_factor=0.5)
    assert lab[0, 0].tolist() == [1, 0]  # class 2 is absent although it is highest


def test_fn_local_prototype_recovers_missed_body():
    # Pixels: bg, part, part, body, body, bg. The refined classifier CAM covers part and body;
    # the global prototype (seeded on the part) misses the body, whose features differ.
    feat = _feat([BG, PART, PART, BODY, BODY, BG])
    seeds = torch.zeros(1, 2, 1, 6, dtype=torch.bool)
    seeds[0, 0, 0, [0, 5]] = True
    seeds[0, 1, 0, [1, 2]] = True
    glob = cluster_prototypes(feat, seeds)
    proto = prototype_cam(feat, seeds)
    assert proto[0, 1, 0, 3] == 0  # body missed
    ref = torch.tensor([[[0, 1, 1, 1, 1, 0]]])
    fn = false_negative_regions(ref, region_labels(proto, torch.ones(1, 1)), 2)
    assert fn[0, 1, 0].int().tolist() == [0, 0, 0, 1, 1, 0]
    out = calibrated_cam(feat, glob, fn=local_prototypes(feat, fn))
    assert_close(out[0, 1, 0, 3:5], torch.ones(2), atol=1e-4, rtol=0)  # body recovered
    assert out[0, 1, 0, 0] < 0.01  # background untouched


def test_fp_local_prototype_suppresses_context():
    # Pixels: bg, part, part, ctx, ctx, bg. The class prototype (part + context seeds) fires on
    # the context patch; the classifier calls it background -> FP prototype joins background.
    feat = _feat([BG, PART, PART, CTX, CTX, BG])
    seeds = torch.zeros(1, 2, 1, 6, dtype=torch.bool)
    seeds[0, 0, 0, [0, 5]] = True
    seeds[0, 1, 0, [1, 2, 3]] = True
    glob = cluster_prototypes(feat, seeds)
    proto = prototype_cam(feat, seeds)
    proto_lab = region_labels(proto, torch.ones(1, 1))
    assert proto_lab[0, 0].tolist() == [0, 1, 1, 1, 1, 0]  # context taken as object
    ref = torch.tensor([[[0, 1, 1, 0, 0, 0]]])
    fp = false_positive_regions(ref, proto_lab, 2)
    assert fp[0, 1, 0].int().tolist() == [0, 0, 0, 1, 1, 0]
    out = calibrated_cam(feat, glob, fp=local_prototypes(feat, fp))
    assert region_labels(out, torch.ones(1, 1))[0, 0].tolist() == [0, 1, 1, 0, 0, 0]  # suppressed
    assert_close(
        out[0, 1], torch.nn.functional.relu(proto[0, 1]) / (proto[0, 1].max() + 1e-5)
    )  # class unchanged


def test_small_regions_are_skipped_and_absent_classes_stay_zero():
    feat = _feat([BG, PART, BODY, BODY])
    regions = torch.zeros(1, 3, 1, 4, dtype=torch.bool)
    regions[0, 1, 0, 2] = True  # one cell
    _, valid = local_prototypes(feat, regions, min_size=2)
    assert not valid.any()
    seeds = torch.zeros(1, 3, 1, 4, dtype=torch.bool)
    seeds[0, 0, 0, 0] = seeds[0, 1, 0, 1] = True
    out = calibrated_cam(feat, cluster_prototypes(feat, seeds), local_prototypes(feat, regions), None)
    assert torch.equal(out[0, 2], torch.zeros(1, 4))


def test_attached_to_follows_8_connectivity():
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[0, 0, 1, 1] = region[0, 0, 2, 2] = region[0, 0, 0, 3] = True  # a diagonal chain and a loner
    anchor = torch.zeros_like(region)
    anchor[0, 0, 0, 0] = True
    got = attached_to(region, anchor)[0, 0]
    assert got.nonzero().tolist() == [[1, 1], [2, 2]]  # reached through the chain, not the loner
    assert not attached_to(region, torch.zeros_like(region)).any()  # nothing to attach to


def test_detached_prototype_activation_is_noise_suppressed_only_where_it_was_found():
    """The mutual rule: the prototype CAM's extra pixels touching the classifier's object are
    missed parts (FN, join the class); those touching nothing are noise (FP, join background
    only where they were found: a distractor shares the body's features)."""
    # Pixels: bg, part, body, body, bg, distractor body, distractor body, bg.
    feat = _feat([BG, PART, BODY, BODY, BG, BODY, BODY, BG])
    classifier_lab = torch.tensor([[[0, 1, 1, 0, 0, 0, 0, 0]]])  # the part and a little body
    proto_lab = torch.tensor([[[0, 1, 1, 1, 0, 1, 1, 0]]])  # the prototype also fires on lookalikes
    extra = false_negative_regions(proto_lab, classifier_lab, 2)  # prototype on, classifier off
    fn = attached_to(extra, one_hot_labels(classifier_lab, 2))
    fp = extra & ~fn
    assert fn[0, 1, 0].int().tolist() == [0, 0, 0, 1, 0, 0, 0, 0]  # touches the object
    assert fp[0, 1, 0].int().tolist() == [0, 0, 0, 0, 0, 1, 1, 0]  # touches nothing
    seeds = one_hot_labels(classifier_lab, 2)
    glob = cluster_prototypes(feat, seeds)
    local = calibrated_cam(feat, glob, local_prototypes(feat, fn), local_prototypes(feat, fp), fp_scope=fp)
    fg = torch.relu(local[:, 1:] - local[:, :1])[0, 0, 0]  # foreground after the background (subtract)
    assert (fg[1:4] > 0.2).all() and (fg[[5, 6]] == 0).all() and (fg[[0, 4, 7]] == 0).all()
    # Without the scope the background prototype from the distractor also erases the true body.
    everywhere = calibrated_cam(feat, glob, local_prototypes(feat, fn), local_prototypes(feat, fp))
    assert (torch.relu(everywhere[:, 1:] - everywhere[:, :1])[0, 0, 0, 2:4] == 0).all()


def test_fp_suppression_lowers_only_its_class_where_it_matches():
    cam = torch.tensor([[[[0.3, 0.3, 0.3]], [[0.9, 0.6, 0.4]], [[0.1, 0.8, 0.2]]]])
    act = torch.tensor([[[[1.0, 1.0, 1.0]], [[0.5, 0.7, 0.9]], [[0.0, 0.0, 0.0]]]])
    out = fp_suppression(cam, act)
    assert out[0, 1, 0].tolist() == [cam[0, 1, 0, 0].item(), 0.0, 0.0]
    assert torch.equal(out[0, 0], cam[0, 0]) and torch.equal(out[0, 2], cam[0, 2])
    scope = torch.zeros(1, 3, 1, 3, dtype=torch.bool)
    scope[0, 1, 0, 2] = True  # only the last pixel is in the FP region's reach
    assert fp_suppression(cam, act, scope)[0, 1, 0].tolist() == [cam[0, 1, 0, 0].item(), cam[0, 1, 0, 1].item(), 0.0]


def test_attachment_gate_removes_detached_distractor():
    # Pixels: object (classifier and prototypes), completed body, bg, distractor, distractor.
    cam = torch.tensor([[[[0.1, 0.2, 0.9, 0.2, 0.2]], [[0.9, 0.8, 0.1, 0.7, 0.6]]]])
    ref = torch.tensor([[[1, 0, 0, 0, 0]]])
    out = attachment_gate(cam, torch.ones(1, 1), ref)
    assert_close(out[0, 1, 0], torch.tensor([0.9, 0.8, 0.1, 0.0, 0.0]))
    assert torch.equal(out[0, 0], cam[0, 0])
    # With classifier evidence on the distractor too, it stays.
    ref2 = torch.tensor([[[1, 0, 0, 0, 1]]])
    assert torch.equal(attachment_gate(cam, torch.ones(1, 1), ref2), cam)


def test_fn_scope_keeps_fn_prototypes_near_their_object():
    # Pixels: part, body (missed), bg, bg, distractor body far away.
    feat = _feat([PART, BODY, BG, BG, BODY])
    seeds = torch.zeros(1, 2, 1, 5, dtype=torch.bool)
    seeds[0, 0, 0, [2, 3]] = True
    seeds[0, 1, 0, 0] = True
    glob = cluster_prototypes(feat, seeds)
    fn = torch.zeros(1, 2, 1, 5, dtype=torch.bool)
    fn[0, 1, 0, 1] = True
    everywhere = calibrated_cam(feat, glob, fn=local_prototypes(feat, fn))
    assert everywhere[0, 1, 0, 4] > 0.99  # the distractor lights up
    scope = torch.zeros_like(fn)
    scope[0, 1, 0, :3] = True  # object and FN region, dilated by one cell
    near = calibrated_cam(feat, glob, fn=local_prototypes(feat, fn), fn_scope=scope)
    assert near[0, 1, 0, 1] > 0.99 and near[0, 1, 0, 4] < 0.01  # body kept, distractor not raised
