"""Torch ``Dataset`` over a ``DatasetIndex`` and the batch collate function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.data.records import DatasetError, DatasetIndex, Sample


def load_image(sample: Sample) -> torch.Tensor:
    """The sample's image as uint8 ``[3, H, W]`` RGB, as inference reads it
    (``distill.images.pil_to_rgb``): upright (EXIF orientation), 16-bit scaled to 8, grayscale
    repeated, transparency over white."""
    from PIL import Image

    from distill.images import pil_to_rgb

    try:
        with Image.open(sample.image_path) as im:
            rgb = np.asarray(pil_to_rgb(im))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"image {sample.image_path}: cannot be decoded: {exc}") from exc
    if rgb.shape[:2] != (sample.height, sample.width):
        raise DatasetError(
            f"image {sample.image_path}: decoded size {rgb.shape[1]}x{rgb.shape[0]} differs from "
            f"the validated {sample.width}x{sample.height} (file changed after setup?)"
        )
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # one copy to CHW


class DetectionDataset(Dataset):
    """Items are ``(image float32 [3, S, S], target dict)`` (``transforms.DetectionTransform``)."""

    def __init__(self, index: DatasetIndex,
                 transform: Callable[[torch.Tensor, Sample], tuple] | None = None):
        self.index = index
        self.transform = transform

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, i: int | tuple[int, int]):
        """Item ``i``; for ``(i, seed)`` (``EpochSampler``) random transforms draw from ``seed``."""
        if isinstance(i, tuple):
            index, seed = i
            with torch.random.fork_rng(devices=[]):  # the global RNG stream is left untouched
                # the CPU generator alone: torch.manual_seed would also queue lazy CUDA seeding
                # (a stack trace per call, ~1.5 ms a sample); the transforms draw on the CPU
                torch.default_generator.manual_seed(seed)
                return self.item(index)
        return self.item(i)

    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        """Sample ``i`` loaded and transformed (random draws from the current torch RNG)."""
        sample = self.index.samples[i]
        image = load_image(sample)
        if self.transform is None:
            target = {
                "boxes": torch.from_numpy(sample.boxes.astype(np.float32)).reshape(-1, 4),
                "labels": torch.from_numpy(sample.labels.astype(np.int64)).reshape(-1),
                "image_id": int(sample.image_id),
                "scale": 1.0,
                "orig_size": (sample.height, sample.width),
            }
            return image, target
        return self.transform(image, sample)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """``(images stacked [B, 3, S, S], list of B target dicts)``."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)
