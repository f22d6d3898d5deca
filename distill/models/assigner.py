"""IoU-based anchor assignment (effdet's ArgMaxMatcher), vectorised over the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

NEGATIVE = -1
IGNORED = -2


@dataclass
class PaddedTargets:
    """Ground truth padded to ``M`` boxes per image."""

    boxes: torch.Tensor  # float [B, M, 4] xyxy
    labels: torch.Tensor  # long [B, M]
    valid: torch.Tensor  # bool [B, M]


def pad_targets(targets: list[dict], device: torch.device | str | None = None) -> PaddedTargets:
    """Stack a list of ``{"boxes": [N, 4], "labels": [N]}`` dicts into padded tensors."""
    batch = len(targets)
    num = max([len(t["boxes"]) for t in targets] + [1])
    if device is None:
        device = targets[0]["boxes"].device if batch else "cpu"
    boxes = torch.zeros(batch, num, 4, device=device)
    labels = torch.zeros(batch, num, dtype=torch.long, device=device)
    valid = torch.zeros(batch, num, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        boxes[i, :n] = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(
            -1, 4
        )
        labels[i, :n] = torch.as_tensor(t["labels"], dtype=torch.long, device=device)
        valid[i, :n] = True
    return PaddedTargets(boxes, labels, valid)


def assign(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_valid: torch.Tensor,
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    force_match: bool = True,
) -> torch.Tensor:
    """Match every anchor to a ground-truth index.

    Args:
        anchors: ``[A, 4]`` xyxy.
        gt_boxes: ``[B, M, 4]`` xyxy (padded).
        gt_valid: ``[B, M]`` bool, False for padding.

    Returns:
        ``[B, A]`` long: the matched box index (>= 0) when IoU >= ``pos_iou``, ``NEGATIVE``
        (-1) below ``neg_iou``, ``IGNORED`` (-2) in between. With ``force_match`` each valid box
        is also matched to its best anchor whatever the IoU.
    """
    batch, num_gt = gt_valid.shape
    num_anchors = anchors.shape[0]
    iou = box_iou(gt_boxes.reshape(-1, 4), anchors).reshape(batch, num_gt, num_anchors)
    iou = iou.masked_fill(~gt_valid.unsqueeze(-1), -1.0)
    best_iou, best_gt = iou.max(dim=1)  # [B, A]
    matches = torch.where(best_iou >= pos_iou, best_gt, torch.full_like(best_gt, IGNORED))
    matches = torch.where(best_iou < neg_iou, torch.full_like(best_gt, NEGATIVE), matches)
    if force_match:
        best_anchor = iou.argmax(dim=2)  # [B, M]
        offsets = torch.arange(batch, device=anchors.device).unsqueeze(1) * num_anchors
        box_index = torch.arange(num_gt, device=anchors.device).expand(batch, num_gt)
        # padding rows carry num_gt ("no forced match"): no data-dependent shapes, no host sync;
        # when boxes share a best anchor the lowest box index wins (deterministic, like effdet)
        source = torch.where(gt_valid, box_index, num_gt)
        forced = torch.full((batch * num_anchors,), num_gt, dtype=torch.long, device=anchors.device)
        forced.scatter_reduce_(0, (best_anchor + offsets).reshape(-1), source.reshape(-1), "amin")
        forced = forced.view(batch, num_anchors)
        matches = torch.where(forced < num_gt, forced, matches)
    return matches
