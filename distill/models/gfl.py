"""Generalized Focal Loss parts (Li et al. 2020), as DAMO-YOLO's ZeroHead uses them.

- quality focal loss (QFL): sigmoid BCE of the class logits against a soft target (the IoU of
  the predicted box with its ground truth at the assigned class, 0 elsewhere), modulated by
  ``|sigmoid(logit) - target| ** beta`` (beta 2);
- distribution focal loss (DFL): each box side is a distribution over ``reg_max + 1`` bins
  (distances 0, 1, ..., ``reg_max`` in strides); cross entropy to the two bins around the
  continuous target, weighted by the distance to the other bin;
- the integral decode: the expectation of the softmax over the bins;
- point / distance conversions (left, top, right, bottom) and GIoU (``torchvision.ops``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss


def quality_focal_loss(logits: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor,
                       beta: float = 2.0) -> torch.Tensor:
    """QFL per prediction ``[N]`` (summed over classes) for ``logits`` ``[N, K]``,
    ``labels`` ``[N]`` (the class, -1 for background) and ``quality`` ``[N]`` (the IoU
    target of the positives; ignored for background)."""
    logits = logits.float()
    target = torch.zeros_like(logits)
    pos = labels >= 0
    target[pos, labels[pos]] = quality[pos].to(logits.dtype)
    modulator = (logits.sigmoid() - target).abs().pow(beta)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * modulator).sum(dim=-1)


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL per distribution ``[N]`` for ``logits`` ``[N, reg_max + 1]`` and continuous
    ``target`` ``[N]`` in ``[0, reg_max)``: ``CE(left) * (right - t) + CE(right) * (t - left)``
    with ``left = floor(t)``, ``right = left + 1``."""
    logits = logits.float()
    left = target.long().clamp(0, logits.shape[-1] - 2)
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = target - left.to(target.dtype)
    return (F.cross_entropy(logits, left, reduction="none") * w_left
            + F.cross_entropy(logits, right, reduction="none") * w_right)


def dfl_integral(box_out: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distances ``[..., 4]`` (in strides) from distribution logits ``[..., 4 * (reg_max + 1)]``:
    per side the expectation of the softmax over the bins 0..``reg_max``."""
    bins = box_out.float().unflatten(-1, (4, reg_max + 1)).softmax(dim=-1)
    project = torch.arange(reg_max + 1, dtype=bins.dtype, device=bins.device)
    return (bins * project).sum(dim=-1)


def distance_to_box(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Boxes xyxy from ``points`` ``[..., 2]`` and (left, top, right, bottom) ``distances``."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def box_to_distance(points: torch.Tensor, boxes: torch.Tensor, max_distance: float | None = None,
                    eps: float = 0.1) -> torch.Tensor:
    """(left, top, right, bottom) distances from ``points`` to the sides of ``boxes``,
    clamped to ``[0, max_distance - eps]`` when ``max_distance`` is given (DFL targets)."""
    dist = torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)
    if max_distance is not None:
        dist = dist.clamp(min=0, max=max_distance - eps)
    return dist


def giou_loss(boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - GIoU`` per pair of xyxy boxes ``[N, 4]`` (``torchvision.ops``)."""
    return generalized_box_iou_loss(boxes.float(), targets.float(), reduction="none")
