"""Letterbox transforms (torchvision.transforms.v2 on tv_tensors) and the target dict.

Validation: resize so the longer side is ``S`` (one factor ``scale = S / max(h, w)`` for both axes),
pad bottom/right to ``S x S``, normalise with ImageNet mean/std. Boxes are multiplied by
``scale``, so ``boxes / scale`` gives the original boxes back exactly.

Training: the same with the longer side ``round(S * U(scale_range))`` (scale jitter), padded
bottom/right and randomly cropped back to ``S x S`` when larger, horizontal flip, clamping and
``SanitizeBoundingBoxes`` (boxes cut below 1 px by the crop are removed with their labels).

Padding uses the ImageNet mean colour, i.e. ~0 after normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from distill.data.records import Sample
from distill.data.settings import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_FILL = [round(255 * m) for m in IMAGENET_MEAN]  # uint8 mean colour


def _size_of(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, tv_tensors.Image):
            return int(inpt.shape[-2]), int(inpt.shape[-1])
    raise TypeError("expected a tv_tensors.Image among the inputs")


class ResizeLongestSide(v2.Transform):
    """Resize so the longer side is ``round(size * s)``, ``s ~ U(scale_range)``, with one factor
    for both axes (images to the rounded size, boxes multiplied by the exact factor)."""

    def __init__(self, size: int, scale_range: Sequence[float] = (1.0, 1.0)):
        super().__init__()
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.size, self.scale_range = int(size), (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _size_of(flat_inputs)
        lo, hi = self.scale_range
        s = lo if lo == hi else lo + (hi - lo) * float(torch.rand(()))
        longest = max(1, round(self.size * s))
        factor = longest / max(h, w)
        new_size = [max(1, round(h * factor)), max(1, round(w * factor))]
        return {"factor": factor, "new_size": new_size}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            if inpt.format != tv_tensors.BoundingBoxFormat.XYXY:
                raise ValueError("ResizeLongestSide expects XYXY boxes")
            return tv_tensors.wrap(
                inpt.as_subclass(torch.Tensor) * params["factor"],
                like=inpt,
                canvas_size=tuple(params["new_size"]),
            )
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return F.resize(inpt, params["new_size"], antialias=True)
        return inpt


def _color_jitter(strength: float) -> list[v2.Transform]:
    """Brightness, contrast and saturation jitter of ``strength``; hue a quarter of it."""
    if strength <= 0:
        return []
    return [v2.ColorJitter(strength, strength, strength, min(0.5, strength / 4))]


class PadBottomRight(v2.Transform):
    """Pad on the bottom and right up to at least ``size x size`` (boxes do not move)."""

    def __init__(self, size: int, fill: Sequence[float] | float = 0):
        super().__init__()
        self.size, self.fill = int(size), fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _size_of(flat_inputs)
        return {"padding": [0, 0, max(0, self.size - w), max(0, self.size - h)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image):
            return F.pad(inpt, params["padding"], fill=self.fill)
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask)):
            return F.pad(inpt, params["padding"])
        return inpt


class DetectionTransform:
    """``(uint8 image [3, H, W], Sample) -> (float32 image [3, S, S], target dict)``.

    The target has ``boxes`` (float32 [N, 4], letterboxed pixels), ``labels`` (int64 [N]),
    ``image_id`` (int), ``scale`` (float, letterboxed / original) and ``orig_size`` ``(h, w)``.
    """

    def __init__(self, image_size: int, train: bool = False,
                 augment: AugmentConfig | None = None):
        augment = augment if augment is not None else AugmentConfig()
        self.image_size = int(image_size)
        self.train = bool(train and augment.enabled)
        scale_range = tuple(augment.scale_range) if self.train else (1.0, 1.0)
        if len(scale_range) != 2:
            raise ValueError(f"augment.scale_range must be [lo, hi], got {augment.scale_range}")
        self.resize = ResizeLongestSide(self.image_size, scale_range)
        steps: list[v2.Transform] = [PadBottomRight(self.image_size, fill=PAD_FILL)]
        if self.train:
            steps += [
                v2.RandomCrop(self.image_size),
                v2.RandomHorizontalFlip(p=float(augment.hflip)),
                *_color_jitter(float(augment.color_jitter)),
                v2.ClampBoundingBoxes(),
                v2.SanitizeBoundingBoxes(min_size=1.0),
            ]
        steps += [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
        self.rest = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, sample: Sample) -> tuple[torch.Tensor, dict]:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        data = {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(
                torch.as_tensor(np.asarray(sample.boxes, dtype=np.float32)).reshape(-1, 4),
                format=tv_tensors.BoundingBoxFormat.XYXY,
                canvas_size=(h, w),
            ),
            "labels": torch.as_tensor(np.asarray(sample.labels, dtype=np.int64)).reshape(-1),
        }
        data = self.resize(data)
        scale = max(data["image"].shape[-2:]) / max(h, w)  # == the exact resize factor
        data = self.rest(data)
        target = {
            "boxes": data["boxes"].as_subclass(torch.Tensor).to(torch.float32).reshape(-1, 4),
            "labels": data["labels"].to(torch.int64),
            "image_id": int(sample.image_id),
            "scale": float(scale),
            "orig_size": (h, w),
        }
        return data["image"].as_subclass(torch.Tensor), target


def build_transforms(image_size: int, augment: AugmentConfig | None = None
                     ) -> tuple[DetectionTransform, DetectionTransform]:
    """``(train, val)`` transforms."""
    return DetectionTransform(image_size, True, augment), DetectionTransform(image_size, False)
