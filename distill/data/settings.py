"""Data settings of a recipe (plain dataclasses, omegaconf-structured friendly, no heavy imports).

``Optional[...]`` rather than ``X | None``: omegaconf < 2.4 does not understand PEP 604 unions.
"""
# ruff: noqa: UP045

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

BAD_SAMPLE_POLICIES: tuple[str, ...] = ("error", "drop")


@dataclass
class AugmentConfig:
    """Training-time augmentation (validation never augments)."""

    enabled: bool = True  # false: train images get the validation transform (letterbox only)
    hflip: float = 0.5  # probability of a horizontal flip
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength (hue: a quarter)
    # random scale of the letterbox size: the longer side becomes image_size * U(lo, hi), then the
    # image is padded (bottom/right) or randomly cropped back to image_size x image_size
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    # probabilities of a mosaic (four images) and of a mixup (two blended) per training item
    # (distill.data.mixing); 0: off
    mosaic: float = 0.0
    mixup: float = 0.0


@dataclass
class DataConfig:
    """Which dataset to read, how to treat bad samples, and the data loader settings."""

    # a registered format (distill.data.formats): synthetic | coco | voc | yolo | a plug-in
    format: str = "synthetic"
    # the format's own settings, checked against its settings dataclass (unknown keys stop with
    # the valid ones); the built-in formats' settings are also the top-level keys below
    # (image_dir, val_fraction, split_seed), which keep working as they are
    options: dict[str, Any] = field(default_factory=dict)
    # dataset folder (yolo: the folder holding data.yaml, or the data.yaml path itself)
    root: str = "data/synthetic"
    # train split. coco: JSON path relative to root; voc: ImageSets/Main split name; yolo: key in
    # data.yaml. For voc and yolo the coco default below is read as "train".
    train: str = "annotations/train.json"
    val: str = "annotations/val.json"  # val split, as `train` (voc / yolo: the default means "val")
    image_dir: Optional[str] = None  # coco only: folder `file_name` is relative to (default: root)
    # voc: class names in label order (default: the sorted names found in the train split)
    classes: Optional[list[str]] = None
    # error: stop before training with a message listing the problems;
    # drop: drop bad objects (the whole image when the image itself is bad), report counts once
    bad_samples: str = "error"
    # decode every image once before training (JPEGs at 1/8 scale, in threads), so a truncated or
    # corrupt file is a bad sample then, not an error mid-training; false: read headers only
    verify_images: bool = True
    # voc without ImageSets: the fraction of the XML files in the val split, and the seed of the
    # shuffle that picks them (the split does not depend on the recipe's seed)
    val_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 8  # training batch size
    val_batch_size: Optional[int] = None  # validation batch size (default: batch_size)
    num_workers: int = 2  # data loader worker processes (0: load in the main process)
    max_train_images: Optional[int] = None  # take the first N training images (for quick runs)
    max_val_images: Optional[int] = None  # take the first N validation images
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentation


@dataclass
class SyntheticConfig:
    """Settings of the generated dataset (simple types only, omegaconf friendly); the generator
    is ``distill.data.synthetic``."""

    num_train: int = 600  # number of training images
    num_val: int = 150  # number of validation images
    image_size: int = 256  # side of the square images, pixels
    seed: int = 0  # master seed; each image's RNG derives from (seed, split, index)
    min_objects: int = 0  # fewest objects drawn per image; if 0, every 10th image has none
    max_objects: int = 8  # most objects drawn per image
    min_size: int = 10  # smallest object size in pixels (longer side of its box)
    max_size: int = 120  # largest object size in pixels (longer side of its box)
    clutter: int = 6  # average number of unlabelled distractor shapes / lines per image

    def check(self) -> SyntheticConfig:
        """``self`` when its values can be generated; ``ValueError`` naming the one that cannot."""
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError("num_train and num_val must be >= 0")
        if self.image_size < 32:
            raise ValueError("image_size must be >= 32")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError("need 0 <= min_objects <= max_objects")
        if not 4 <= self.min_size <= self.max_size <= self.image_size:
            raise ValueError("need 4 <= min_size <= max_size <= image_size")
        if self.clutter < 0:
            raise ValueError("clutter must be >= 0")
        return self
