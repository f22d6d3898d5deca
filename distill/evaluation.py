"""COCO mAP with torchmetrics, predictions mapped back to original image pixels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

# pycocotools' own thresholds in float64 (torchmetrics' defaults are float32, so a recall of
# exactly 0.35 would fall below its 0.35 threshold and the mAP differ from COCO's)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101).tolist()


def make_map_metric() -> MeanAveragePrecision:
    """COCO box mAP (pycocotools backend), equal to pycocotools' ``COCOeval``.

    Per-class AP comes from the one evaluation's precision table (``extended_summary``):
    torchmetrics' ``class_metrics`` would evaluate everything again per class (twice the time).
    """
    return MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        iou_thresholds=COCO_IOU_THRESHOLDS,
        rec_thresholds=COCO_RECALL_THRESHOLDS,
        extended_summary=True,
    )


def per_class_ap(precision: torch.Tensor) -> list[float]:
    """AP@[.5:.95] per class from COCOeval's precision table ``[T, R, K, area, max dets]``
    (all areas, the most detections), -1 for a class without ground truth, as COCO does."""
    table = precision[:, :, :, 0, -1]
    valid = table > -1
    counts = valid.sum(dim=(0, 1))
    sums = torch.where(valid, table, 0.0).sum(dim=(0, 1))
    return torch.where(counts > 0, sums / counts.clamp(min=1), -1.0).tolist()


def precision_at_iou50(precision: torch.Tensor) -> list[list[float] | None]:
    """Per class the precision at COCO's 101 recall points, IoU 0.5, all areas, the most
    detections (the precision-recall curve); ``None`` for a class without ground truth."""
    table = precision[0, :, :, 0, -1].T  # [K, R]
    return [None if bool((row < 0).all()) else [round(float(p), 4) for p in row.clamp(min=0)]
            for row in table]


def to_original_pixels(
    predictions: list[dict[str, torch.Tensor]], targets: list[dict[str, Any]]
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Undo the letterbox scale on predictions and targets, ready for ``MeanAveragePrecision``."""
    preds, gts = [], []
    for pred, target in zip(predictions, targets):
        scale = float(target["scale"])
        preds.append(
            {"boxes": pred["boxes"] / scale, "scores": pred["scores"], "labels": pred["labels"]}
        )
        gts.append({"boxes": target["boxes"] / scale, "labels": target["labels"]})
    return preds, gts


def summarize_map(result: dict[str, torch.Tensor], class_names: list[str]) -> dict[str, Any]:
    """Plain-number summary: ``map``, ``map_50``, ``map_75``, size buckets, recall, per-class AP
    and per-class precision at the 101 recall points at IoU 0.5 (``pr_50``).

    A class without ground truth in the evaluated split gets ``None`` instead of COCO's -1.
    """
    keys = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
    summary: dict[str, Any] = {k: round(float(result[k]), 6) for k in keys if k in result}
    per_class: dict[str, float | None] = {name: None for name in class_names}
    curves: dict[str, list[float] | None] = {name: None for name in class_names}
    classes = result.get("classes")
    precision = result.get("precision")
    if classes is not None and precision is not None and precision.ndim == 5:
        ids = classes.reshape(-1).tolist()
        for cls, ap, curve in zip(ids, per_class_ap(precision), precision_at_iou50(precision)):
            if 0 <= cls < len(class_names):
                per_class[class_names[cls]] = round(ap, 6) if ap >= 0 else None
                curves[class_names[cls]] = curve
    summary["per_class"] = per_class
    summary["pr_50"] = curves
    return summary


def run_folder_of(checkpoint: str | os.PathLike) -> Path:
    """The run folder a checkpoint belongs to: the parent of its ``checkpoints/`` folder, or
    the folder that holds it when it lies elsewhere."""
    folder = Path(checkpoint).parent
    return folder.parent if folder.name == "checkpoints" else folder
