"""Training images made of several: mosaic (four images in a 2 x 2 grid, a random window of it)
and mixup (two images blended, both sets of boxes kept), as YOLOX and DAMO-YOLO train.

Each part is a training item as ``DetectionDataset`` gives it (letterboxed, scale-jittered,
flipped, normalised, ``S x S``), so the mixed image is one more training item of that size:

- mosaic (probability ``augment.mosaic``): the item and three others drawn at random fill a
  ``2S x 2S`` grid; a square window of side ``c ~ U(S, 2S)`` that always holds the grid's centre
  is cut out and resized to ``S``; boxes follow, are clipped to the window, and those under one
  pixel (after the resize) are dropped;
- mixup (probability ``augment.mixup``, after mosaic): the item is averaged 50/50 with another
  (itself a mosaic with the same probability); the target holds both images' boxes.

Random draws come from the torch generator that ``DetectionDataset`` seeds per item, so a mixed
item depends on (seed, epoch, index) alone, as every other augmentation does.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from distill.data.dataset import DetectionDataset
from distill.errors import RecipeError

Item = tuple[torch.Tensor, dict]


def _probability(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise RecipeError(f"data.augment.{key}: {value!r} is not a probability (0..1)")
    return float(value)


def _coin(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


def _other(count: int) -> int:
    return int(torch.randint(count, ()))


class MixedDataset(Dataset):
    """``dataset``'s training items, some of them mosaics and mixups (module docstring)."""

    def __init__(self, dataset: DetectionDataset, mosaic: float = 0.0, mixup: float = 0.0) -> None:
        self.dataset = dataset
        self.mosaic = _probability("mosaic", mosaic)
        self.mixup = _probability("mixup", mixup)
        self.sanitize = v2.Compose([v2.ClampBoundingBoxes(),
                                    v2.SanitizeBoundingBoxes(min_size=1.0)])

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int | tuple[int, int]) -> Item:
        """Item ``i``; for ``(i, seed)`` every random draw (parts and their transforms) comes
        from ``seed``."""
        if not isinstance(i, tuple):
            return self._mixed(i)
        index, seed = i
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self._mixed(index)

    def _mixed(self, index: int) -> Item:
        image, target = self._maybe_mosaic(index)
        if _coin(self.mixup):
            other, other_target = self._maybe_mosaic(_other(len(self)))
            image = 0.5 * image + 0.5 * other
            target = {**target,
                      "boxes": torch.cat([target["boxes"], other_target["boxes"]]),
                      "labels": torch.cat([target["labels"], other_target["labels"]])}
        return image, target

    def _maybe_mosaic(self, index: int) -> Item:
        if not _coin(self.mosaic):
            return self.dataset.item(index)
        parts = [self.dataset.item(j) for j in (index, *(_other(len(self)) for _ in range(3)))]
        return self._mosaic(parts)

    def _mosaic(self, parts: list[Item]) -> Item:
        """Four ``S x S`` items -> one: the 2 x 2 grid, a window around its centre, resized."""
        size = int(parts[0][0].shape[-1])
        images = [image for image, _ in parts]
        grid = torch.cat([torch.cat(images[:2], -1), torch.cat(images[2:], -1)], -2)
        offsets = torch.tensor([[0, 0], [size, 0], [0, size], [size, size]], dtype=torch.float32)
        boxes = torch.cat([t["boxes"] + offsets[k].repeat(2) for k, (_, t) in enumerate(parts)])
        labels = torch.cat([t["labels"] for _, t in parts])
        side = int(size * (1 + float(torch.rand(()))))
        left, top = (int(torch.randint(2 * size - side + 1, ())) for _ in range(2))
        image = F.crop(tv_tensors.Image(grid), top, left, side, side)
        boxes = F.crop(tv_tensors.BoundingBoxes(boxes, format="XYXY",
                                                canvas_size=(2 * size, 2 * size)),
                       top, left, side, side)
        image, boxes = (F.resize(x, [size, size], antialias=True) for x in (image, boxes))
        out = self.sanitize({"image": image, "boxes": boxes, "labels": labels})
        target = {**parts[0][1], "boxes": out["boxes"].as_subclass(torch.Tensor).float(),
                  "labels": out["labels"]}
        return out["image"].as_subclass(torch.Tensor), target
