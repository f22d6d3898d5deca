"""EfficientDet detection loss: sigmoid focal loss + Huber box loss."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .anchors import BoxCoder
from .assigner import IGNORED, PaddedTargets, assign
from .focal_loss import sigmoid_focal_loss_sum


def box_loss_sum(
    box_deltas: torch.Tensor,
    box_targets: torch.Tensor,
    positive: torch.Tensor,
    delta: float = 0.1,
) -> torch.Tensor:
    """Summed Huber loss (``delta``) of the box deltas over the positive anchors."""
    loss = F.huber_loss(box_deltas, box_targets, reduction="none", delta=delta)
    return (loss.sum(dim=-1) * positive).sum()


def detection_loss(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    targets: PaddedTargets,
    coder: BoxCoder | None = None,
    alpha: float = 0.25,
    gamma: float = 1.5,
    delta: float = 0.1,
    box_weight: float = 50.0,
    pos_iou: float = 0.5,
    neg_iou: float = 0.5,
    across_ranks: bool = False,
) -> dict[str, torch.Tensor]:
    """Loss dict ``loss``, ``cls_loss``, ``box_loss`` as in EfficientDet / effdet.

    ``N`` = positives in the batch + 1; ``cls_loss`` = focal sum / ``N`` over non-ignored
    anchors, ``box_loss`` = Huber sum / (``4 N``) over positives,
    ``loss = cls_loss + box_weight * box_loss``. Anchors match at IoU >= ``pos_iou``, are
    negatives below ``neg_iou`` and ignored in between: effdet and EfficientDet use 0.5 for both
    (no ignored band), RetinaNet 0.5 / 0.4. ``across_ranks`` (training under DDP, a
    collective call every rank must make): ``N`` counts the positives of all processes.
    """
    coder = coder or BoxCoder()
    matches = assign(anchors, targets.boxes, targets.valid, pos_iou, neg_iou)  # [B, A]
    positive = matches >= 0
    keep = matches != IGNORED
    idx = matches.clamp(min=0)
    labels = torch.where(positive, torch.gather(targets.labels, 1, idx), -1)
    matched_boxes = torch.gather(targets.boxes, 1, idx.unsqueeze(-1).expand(-1, -1, 4))
    box_targets = coder.encode(matched_boxes, anchors.unsqueeze(0))
    box_targets = torch.where(positive.unsqueeze(-1), box_targets, torch.zeros_like(box_targets))
    positives = positive.sum().to(cls_logits.dtype)
    if across_ranks and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # N over the global batch, divided by the world size: DDP's gradient average then
        # equals the gradient of one process holding the whole batch
        positives = positives.detach().clone()
        dist.all_reduce(positives)
        normalizer = (positives + 1.0) / dist.get_world_size()
    else:
        normalizer = positives + 1.0
    cls_loss = sigmoid_focal_loss_sum(cls_logits.float(), labels, keep, alpha, gamma) / normalizer
    box_loss = box_loss_sum(box_deltas.float(), box_targets, positive, delta) / (4.0 * normalizer)
    return {"loss": cls_loss + box_weight * box_loss, "cls_loss": cls_loss, "box_loss": box_loss}
