"""Log a few validation images with predicted and ground-truth boxes to Weights & Biases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from distill.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _as_list(values: Any) -> list:
    if values is None:
        return []
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().tolist()
    return np.asarray(values).tolist()


def wandb_boxes(
    boxes: Any,
    labels: Any,
    scores: Any | None,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """One ``wandb.Image`` box group: ``{"box_data": [...], "class_labels": {id: name}}``.

    ``boxes`` are ``[N, 4]`` xyxy in image pixels (``"domain": "pixel"``), ``labels`` ``[N]``
    class ids and ``scores`` ``[N]`` (predictions) or ``None`` (ground truth). A label outside
    ``class_names`` is named ``class_<id>``.
    """
    label_names = {i: str(name) for i, name in enumerate(class_names)}
    box_list = [[float(v) for v in b] for b in _as_list(boxes)]
    label_list = [int(v) for v in _as_list(labels)]
    score_list = [float(v) for v in _as_list(scores)] if scores is not None else None
    if len(label_list) != len(box_list) or (
        score_list is not None and len(score_list) != len(box_list)
    ):
        raise ValueError("boxes, labels and scores must have the same length")
    box_data = []
    for i, ((x0, y0, x1, y1), cls) in enumerate(zip(box_list, label_list)):
        name = label_names.setdefault(cls, f"class_{cls}")
        entry: dict[str, Any] = {
            "position": {"minX": x0, "minY": y0, "maxX": x1, "maxY": y1},
            "domain": "pixel",
            "class_id": cls,
            "box_caption": name,
        }
        if score_list is not None:
            entry["box_caption"] = f"{name} {score_list[i]:.2f}"
            entry["scores"] = {"score": score_list[i]}
        box_data.append(entry)
    return {"box_data": box_data, "class_labels": label_names}


def denormalize(images: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised ``[B, 3, H, W]`` floats to uint8 ``[B, H, W, 3]``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    pixels = (images.detach().float().cpu() * std + mean) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def content_size(target: dict, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the letterboxed image without the bottom/right padding (whole image if unknown)."""
    orig, scale = target.get("orig_size"), target.get("scale")
    if orig is None or scale is None:
        return height, width
    h = min(height, max(1, round(float(orig[0]) * float(scale))))
    w = min(width, max(1, round(float(orig[1]) * float(scale))))
    return h, w


def find_wandb_logger(trainer: Any) -> WandbLogger | None:
    """The first ``WandbLogger`` among ``trainer.loggers``, if any."""
    for logger in getattr(trainer, "loggers", None) or []:
        if isinstance(logger, WandbLogger):
            return logger
    return None


class ValidationImageLogger(pl.Callback):
    """On the first validation batch of every ``every_n_epochs``-th epoch, log up to
    ``num_images`` images with predictions (score >= ``score_threshold``) and ground truth to
    W&B under ``val/examples``. Global rank zero only; sanity checks and non-W&B runs are skipped.

    The detector is ``pl_module.student`` when present (distillation), else ``pl_module.model``;
    class names come from ``pl_module.class_names``. The epoch test follows Lightning's
    ``check_val_every_n_epoch``: epoch ``e`` (0-based) is logged when ``(e + 1) % n == 0``.
    """

    def __init__(
        self, num_images: int = 8, score_threshold: float = 0.3, every_n_epochs: int = 1
    ) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.num_images = int(num_images)
        self.score_threshold = float(score_threshold)
        self.every_n_epochs = int(every_n_epochs)

    def _should_log(self, trainer: Any, batch_idx: int, dataloader_idx: int) -> bool:
        return (
            batch_idx == 0
            and dataloader_idx == 0
            and getattr(trainer, "global_rank", 0) == 0
            and not getattr(trainer, "sanity_checking", False)
            and (int(getattr(trainer, "current_epoch", 0)) + 1) % self.every_n_epochs == 0
        )

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._should_log(trainer, batch_idx, dataloader_idx):
            return
        logger = find_wandb_logger(trainer)
        if logger is None:
            return
        images = self.build_images(pl_module, batch)
        logger.experiment.log({"val/examples": images, "trainer/global_step": trainer.global_step})

    def build_images(self, pl_module: Any, batch: Any) -> list:
        """``wandb.Image`` objects for the first ``num_images`` images of ``batch``."""
        import wandb

        detector = getattr(pl_module, "student", None)
        if detector is None:
            detector = pl_module.model
        class_names = list(getattr(pl_module, "class_names", []) or [])
        images, targets = batch
        images = images[: self.num_images]
        param = next(iter(detector.parameters()), None)
        inputs = images if param is None else images.to(param.device, param.dtype)
        with torch.no_grad():
            predictions = detector.predict(detector(inputs), score_threshold=self.score_threshold)
        arrays = denormalize(images)
        result = []
        for array, pred, target in zip(arrays, predictions, targets):
            h, w = content_size(target, array.shape[0], array.shape[1])
            pred_boxes = pred["boxes"].detach().float().cpu().clone()
            pred_boxes[:, 0::2] = pred_boxes[:, 0::2].clamp(0, w)
            pred_boxes[:, 1::2] = pred_boxes[:, 1::2].clamp(0, h)
            boxes = {
                "predictions": wandb_boxes(pred_boxes, pred["labels"], pred["scores"], class_names),
                "ground_truth": wandb_boxes(target["boxes"], target["labels"], None, class_names),
            }
            result.append(wandb.Image(np.ascontiguousarray(array[:h, :w]), boxes=boxes))
        return result
