"""Datasets: one internal form (``Sample``, ``DatasetIndex``) for every dataset format (COCO,
VOC, YOLO, synthetic data and plug-ins: the ``DATA_FORMATS`` registry of ``distill.data.formats``).

Light imports only at package import; the DataModule / Dataset / transforms (torch, torchvision,
Lightning) are loaded on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from distill.data.formats import DATA_FORMATS, DataFormat
from distill.data.records import (
    BORDER_TOLERANCE_FRAC,
    BORDER_TOLERANCE_PX,
    DatasetError,
    DatasetIndex,
    DatasetWarning,
    Sample,
    validate_samples,
)
from distill.data.settings import AugmentConfig, DataConfig

_LAZY = {
    "parse_coco": "distill.data.formats.coco",
    "parse_voc": "distill.data.formats.voc",
    "parse_yolo": "distill.data.formats.yolo",
    "DetectionDataset": "distill.data.dataset",
    "collate": "distill.data.dataset",
    "load_image": "distill.data.dataset",
    "DetectionTransform": "distill.data.transforms",
    "build_transforms": "distill.data.transforms",
    "DetectionDataModule": "distill.data.datamodule",
}

__all__ = [
    "AugmentConfig",
    "BORDER_TOLERANCE_FRAC",
    "BORDER_TOLERANCE_PX",
    "DATA_FORMATS",
    "DataConfig",
    "DataFormat",
    "DatasetError",
    "DatasetIndex",
    "DatasetWarning",
    "Sample",
    "validate_samples",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distill.data' has no attribute {name!r}")
