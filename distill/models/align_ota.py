"""AlignOTA: DAMO-YOLO's dynamic label assignment (SimOTA-style, Xu et al. 2022).

For one image, over the points of every level at once:

1. candidates (centre prior): points inside a ground-truth box or within ``radius`` strides
   of its centre (any box); only they can become positives;
2. cost of (point, box) = ``cls_weight`` x a focal-style class cost (BCE of the predicted
   quality scores against the one-hot label scaled by the IoU of the predicted box with the
   ground truth, modulated by ``|target - score| ** 2``, summed over classes)
   + ``iou_weight`` x ``-log IoU`` + a large cost unless the point lies both inside the box
   and within the centre radius;
3. dynamic k per box = the sum of its ``topk`` (10) best IoUs, at least 1; each box takes its
   k cheapest candidates; a point taken by several boxes keeps the cheapest one.

As DAMO's ``AlignOTAAssigner`` (cls weight 1, IoU weight 3, radius 2.5), written here
vectorised over points and boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

OUTSIDE_COST = 1e8  # DAMO's INF: a pair outside box-and-centre only matches if nothing else can


@dataclass
class Assignment:
    """Per point: ``gt`` the index of its ground-truth box (-1: background) and ``iou`` the
    IoU of its predicted box with that box (0 for background)."""

    gt: torch.Tensor
    iou: torch.Tensor

    @property
    def positive(self) -> torch.Tensor:
        """Boolean mask of the points assigned to a box."""
        return self.gt >= 0


def centre_prior(centres: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor,
                 radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(candidate [N], in_both [N, G])``: points inside any box or within ``radius``
    strides of any box centre, and per pair whether the point is inside the box and within its
    centre region."""
    x, y = centres[:, 0, None], centres[:, 1, None]
    x1, y1, x2, y2 = gt_boxes.unbind(-1)
    in_box = torch.stack([x - x1, y - y1, x2 - x, y2 - y], -1).amin(-1) > 0
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    reach = radius * strides[:, None]
    in_centre = torch.stack([x - cx + reach, y - cy + reach, cx + reach - x, cy + reach - y],
                            -1).amin(-1) > 0
    candidate = in_box.any(1) | in_centre.any(1)
    return candidate, in_box & in_centre


def class_cost(scores: torch.Tensor, labels: torch.Tensor, ious: torch.Tensor,
               num_classes: int) -> torch.Tensor:
    """Focal-style class cost ``[N, G]`` of predicted quality ``scores`` ``[N, K]`` against
    the one-hot ``labels`` ``[G]`` scaled by the pairs' ``ious`` ``[N, G]``."""
    soft = F.one_hot(labels.long(), num_classes).to(scores.dtype)[None] * ious[..., None]
    pred = scores[:, None, :].expand_as(soft)
    bce = F.binary_cross_entropy(pred, soft, reduction="none")
    return (bce * (soft - pred).abs().pow(2.0)).sum(-1)


def dynamic_k_match(cost: torch.Tensor, ious: torch.Tensor, topk: int = 10) -> torch.Tensor:
    """Matched box per point ``[N]`` (-1: none) from ``cost`` and ``ious`` ``[N, G]``: each box
    takes its ``k`` cheapest points, ``k`` = the sum of its ``topk`` best IoUs (floored, at
    least 1); a point taken by several boxes keeps its cheapest box."""
    num = cost.shape[0]
    k_best = min(topk, num)
    dynamic_k = ious.topk(k_best, dim=0).values.sum(0).int().clamp(min=1)  # [G]
    order = cost.argsort(dim=0, stable=True)  # [N, G], cheapest first
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(num, device=cost.device)[:, None].expand_as(order))
    matched = rank < dynamic_k[None]  # [N, G]
    several = matched.sum(1) > 1
    cheapest = F.one_hot(cost.argmin(1), cost.shape[1]).bool()
    matched = torch.where(several[:, None], cheapest, matched)
    return torch.where(matched.any(1), matched.float().argmax(1), -1)


# DAMO-YOLO's settings: centre-prior radius (strides), dynamic-k top-k, the cost's weights
ALIGN_OTA_DEFAULTS = {"radius": 2.5, "topk": 10, "cls_weight": 1.0, "iou_weight": 3.0}


@torch.no_grad()
def align_ota_assign(scores: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor,
                     pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                     radius: float = 2.5, topk: int = 10, cls_weight: float = 1.0,
                     iou_weight: float = 3.0) -> Assignment:
    """Assign the points of one image (``scores`` ``[N, K]`` sigmoid qualities, point
    ``centres`` ``[N, 2]``, ``strides`` ``[N]``, decoded ``pred_boxes`` ``[N, 4]``) to the
    ground truth ``gt_boxes`` ``[G, 4]`` / ``gt_labels`` ``[G]`` (see the module docstring)."""
    num = scores.shape[0]
    gt = torch.full((num,), -1, dtype=torch.long, device=scores.device)
    iou = scores.new_zeros(num)
    if len(gt_boxes) == 0 or num == 0:
        return Assignment(gt, iou)
    candidate, in_both = centre_prior(centres, strides, gt_boxes.float(), radius)
    index = candidate.nonzero().squeeze(1)
    if len(index) == 0:
        return Assignment(gt, iou)
    ious = box_iou(pred_boxes[index].float(), gt_boxes.float())  # [M, G]
    cost = (cls_weight * class_cost(scores[index].float(), gt_labels, ious, scores.shape[1])
            + iou_weight * -torch.log(ious + 1e-7)
            + OUTSIDE_COST * (~in_both[index]).float())
    match = dynamic_k_match(cost, ious, topk)
    hit = match >= 0
    gt[index[hit]] = match[hit]
    iou[index[hit]] = ious[hit, match[hit]].to(iou.dtype)
    return Assignment(gt, iou)
