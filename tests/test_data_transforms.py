"""Letterbox transforms, the target dict and collate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import AugmentConfig, Sample
from distill.data.dataset import collate
from distill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, DetectionTransform

torch.set_num_threads(1)
S = 64


def make(w: int, h: int, boxes, labels=None, seed: int = 0):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels if labels is not None else [0] * len(boxes), dtype=np.int64)
    image = torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (3, h, w), np.uint8))
    return image, Sample(Path("x.png"), boxes, labels, image_id=7, width=w, height=h)


BOXES = [[0, 0, 50, 37], [3.5, 4.25, 20, 30], [49, 36, 50, 37]]


def test_val_letterbox_and_target(tmp_path):
    image, sample = make(50, 37, BOXES, [0, 1, 2])
    out, target = DetectionTransform(S, train=False)(image, sample)
    assert out.shape == (3, S, S) and out.dtype == torch.float32
    assert target["scale"] == pytest.approx(S / 50)
    assert target["orig_size"] == (37, 50) and target["image_id"] == 7
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(target["boxes"].numpy() / target["scale"], sample.boxes, atol=1e-3)
    # padding at the bottom (rows >= round(37 * 64 / 50) = 47) is the mean colour: ~0
    assert out[:, 48:, :].abs().max() < 0.02
    assert out[:, :40, :].abs().mean() > 0.3  # image content is there


def test_val_tall_image_pads_right():
    image, sample = make(30, 90, [[0, 0, 30, 90]])
    out, target = DetectionTransform(S, train=False)(image, sample)
    assert target["scale"] == pytest.approx(S / 90)
    np.testing.assert_allclose(target["boxes"].numpy(), [[0, 0, 30 * S / 90, S]], atol=1e-4)
    assert out[:, :, 23:].abs().max() < 0.02


def test_normalisation_uses_imagenet_stats():
    w = h = 16
    mean = torch.tensor(IMAGENET_MEAN)
    image = (mean * 255).round().to(torch.uint8)[:, None, None].expand(3, h, w).contiguous()
    sample = Sample(Path("x.png"), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0, w, h)
    out, _ = DetectionTransform(S, train=False)(image, sample)
    assert out.abs().max() < 0.02
    white = torch.full((3, h, w), 255, dtype=torch.uint8)
    out, _ = DetectionTransform(S, train=False)(white, sample)
    expected = (1 - mean) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 0, 0], expected, atol=1e-4, rtol=0)


def test_flip_mirrors_boxes():
    image, sample = make(50, 37, BOXES)
    aug = AugmentConfig(enabled=True, hflip=1.0, scale_range=[1.0, 1.0])
    out, target = DetectionTransform(S, train=True, augment=aug)(image, sample)
    plain, val_target = DetectionTransform(S, train=False)(image, sample)
    b = val_target["boxes"]
    mirrored = torch.stack([S - b[:, 2], b[:, 1], S - b[:, 0], b[:, 3]], dim=1)
    torch.testing.assert_close(target["boxes"], mirrored)
    torch.testing.assert_close(out, plain.flip(-1))


def test_jitter_keeps_boxes_inside_the_canvas():
    torch.manual_seed(0)
    image, sample = make(50, 37, BOXES, [0, 1, 2])
    tf = DetectionTransform(S, train=True, augment=AugmentConfig(scale_range=[0.5, 1.6]))
    scales = set()
    for _ in range(30):
        out, target = tf(image, sample)
        assert out.shape == (3, S, S)
        boxes = target["boxes"]
        assert boxes.shape == (len(target["labels"]), 4)
        assert (boxes >= 0).all() and (boxes <= S).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all()
        scales.add(round(target["scale"], 4))
    assert len(scales) > 5  # the scale really varies


def test_no_objects_gives_empty_boxes():
    image, sample = make(40, 30, [])
    for train in (True, False):
        out, target = DetectionTransform(S, train=train)(image, sample)
        assert out.shape == (3, S, S)
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_augment_disabled_is_the_val_transform():
    image, sample = make(50, 37, BOXES)
    a, ta = DetectionTransform(S, train=True, augment=AugmentConfig(enabled=False))(image, sample)
    b, tb = DetectionTransform(S, train=False)(image, sample)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ta["boxes"], tb["boxes"])


def test_collate_stacks_images_and_lists_targets():
    tf = DetectionTransform(S, train=False)
    batch = [tf(*make(50, 37, BOXES)), tf(*make(20, 30, []))]
    images, targets = collate(batch)
    assert images.shape == (2, 3, S, S) and images.dtype == torch.float32
    assert isinstance(targets, list) and len(targets) == 2
    assert targets[1]["boxes"].shape == (0, 4)


def test_color_jitter_changes_pixels_not_boxes():
    image, sample = make(50, 37, BOXES)
    still = AugmentConfig(enabled=True, hflip=0.0, scale_range=[1.0, 1.0])
    jitter = AugmentConfig(enabled=True, hflip=0.0, scale_range=[1.0, 1.0], color_jitter=0.5)
    torch.manual_seed(0)
    plain, plain_target = DetectionTransform(S, train=True, augment=still)(image, sample)
    torch.manual_seed(0)
    out, target = DetectionTransform(S, train=True, augment=jitter)(image, sample)
    torch.testing.assert_close(target["boxes"], plain_target["boxes"])
    assert not torch.allclose(out[:, :37, :50], plain[:, :37, :50])
