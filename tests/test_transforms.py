"""Tests for cpmc_lib.transforms: masks stay aligned with images, padding is ignore, labels untouched."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from cpmc_lib.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomScale,
    denormalize,
    eval_transform,
    train_transform,
)


def _square_sample(h: int = 60, w: int = 80) -> dict:
    """Black image with an off-centre red square whose mask is class 1 (asymmetric, so a flip shows)."""
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    mask = torch.zeros(h, w, dtype=torch.int64)
    img[0, 10:40, 8:38] = 255
    mask[10:40, 8:38] = 1
    diag = torch.zeros(h, w, dtype=torch.int64)
    diag[10:40, 8:38] = 3
    return {
        "name": "sq",
        "img": tv_tensors.Image(img),
        "mask": tv_tensors.Mask(mask),
        "diag": tv_tensors.Mask(diag),
        "label": torch.tensor([1.0, 0.0, 1.0]),
    }


def test_train_transform_keeps_mask_aligned():
    tf = train_transform(48, scale=(0.7, 1.3), flip=True, color_jitter=0.3)
    checked = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out = tf(_square_sample())
        assert out["img"].shape == (3, 48, 48) and out["img"].dtype == torch.float32
        red = denormalize(out["img"])[0] > 127  # jitter keeps red >> 127 and black at 0
        cls1 = out["mask"] == 1
        assert torch.equal(cls1, out["diag"] == 3)
        if cls1.sum() < 20:  # crop missed the square
            continue
        iou = (red & cls1).sum() / (red | cls1).sum()
        assert iou > 0.9, f"seed {seed}: image and mask disagree (IoU {iou:.2f})"
        checked += 1
    assert checked >= 6


def test_flip_moves_mask_with_image():
    # No scale, a crop as large as the image, no jitter: the output is the input or its mirror.
    tf = train_transform(60, scale=(1.0, 1.0), flip=True, color_jitter=0)
    s = _square_sample(60, 60)
    outcomes = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out = tf(_square_sample(60, 60))
        flipped = not torch.equal(out["mask"], s["mask"])
        if flipped:
            assert torch.equal(out["mask"], s["mask"].flip(-1))
        assert torch.equal(denormalize(out["img"]), s["img"].flip(-1) if flipped else s["img"])
        outcomes.add(flipped)
    assert outcomes == {False, True}


def test_padding_fills_image_zero_and_masks_ignore():
    torch.manual_seed(0)
    s = _square_sample(20, 24)
    s["mask"][:] = 0
    out = train_transform(32, scale=(1.0, 1.0), flip=False, color_jitter=0)(s)
    valid = out["mask"] != 255
    assert valid.sum() == 20 * 24  # every original pixel kept, every padded pixel ignore
    assert ((out["diag"] == 255) == ~valid).all()
    rows, cols = valid.any(1).nonzero().flatten(), valid.any(0).nonzero().flatten()
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 24)
    assert (denormalize(out["img"])[:, ~valid] == 0).all()


def test_label_name_pass_through_unchanged():
    s = _square_sample()
    label = s["label"].clone()
    for tf in (train_transform(32), eval_transform()):
        out = tf(_square_sample())
        assert out["name"] == "sq" and type(out["label"]) is torch.Tensor
        assert torch.equal(out["label"], label) and out["label"].dtype == torch.float32


def test_eval_transform_and_denormalize_round_trip():
    s = _square_sample()
    out = eval_transform()(s)
    assert out["img"].dtype == torch.float32 and out["img"].shape == (3, 60, 80)
    assert torch.equal(out["mask"], s["mask"]) and out["mask"].dtype == torch.int64
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(out["img"], (s["img"] / 255.0 - mean) / std)
    assert torch.equal(denormalize(out["img"]), s["img"].as_subclass(torch.Tensor))
    batch = denormalize(out["img"][None].repeat(2, 1, 1, 1))
    assert batch.shape == (2, 3, 60, 80) and batch.dtype == torch.uint8


def test_random_scale_range():
    torch.manual_seed(0)
    sizes = {tuple(RandomScale((0.5, 2.0))(_square_sample(40, 50))["mask"].shape) for _ in range(20)}
    assert all(20 <= h <= 80 and abs(w / h - 1.25) < 0.05 for h, w in sizes) and len(sizes) > 5
    with pytest.raises(ValueError, match="scale"):
        RandomScale((1.5, 1.0))
