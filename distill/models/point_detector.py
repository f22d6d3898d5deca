"""``PointDetector``: the anchor-free implementation of the model contract with a GFL head
(DAMO-YOLO's ZeroHead): one point per location, box sides as distributions, AlignOTA.

- priors: the stride-sized cell of each location; its point is the cell centre (DAMO puts the
  point at the cell's top-left corner, ``x = col * stride``: a half-stride shift of where
  boxes are anchored, no change to what a trained model can express);
- boxes: (left, top, right, bottom) = the DFL integral of each side's distribution times the
  stride, around the point;
- loss (DAMO's weights): QFL (1.0) over all points / positives, GIoU (2.0) and DFL (0.25) over
  the positives weighted by their best predicted score / the sum of those weights (DFL over 4
  sides); targets from AlignOTA on the detached predictions;
- post-processing: the shared ``Detector.predict`` (sigmoid scores, class-wise NMS) at
  ``nms_iou`` (DAMO: 0.7; the export graph uses the same unless given another).

Taps: ``cls_hidden`` / ``box_hidden``, the inputs of ZeroHead's class and box projections per
level. ZeroHead has no tower, so both are the neck outputs (``head_layers`` 0): CrossKD runs a
student's aligned head features through this teacher's projections alone.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.distributed as dist
from torch import nn

from .align_ota import ALIGN_OTA_DEFAULTS, align_ota_assign
from .anchors import level_sizes
from .detector import Detector, DetectorOutput
from .gfl import (
    box_to_distance,
    dfl_integral,
    distance_to_box,
    distribution_focal_loss,
    giou_loss,
    quality_focal_loss,
)
from .giraffe import reparameterize
from .zero_head import ZeroHead

LOSS_WEIGHTS = {"qfl": 1.0, "giou": 2.0, "dfl": 0.25}  # DAMO-YOLO's ZeroHead


def _mean_over_ranks(value: torch.Tensor, across_ranks: bool) -> torch.Tensor:
    """``value`` averaged over the DDP processes (``across_ranks`` under DDP), detached."""
    value = value.detach().clone()
    if across_ranks and dist.is_available() and dist.is_initialized() \
            and dist.get_world_size() > 1:
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


class PointDetector(Detector):
    """Anchor-free one-stage detector: backbone, neck, ``ZeroHead``; see the module docstring."""

    TAPS: ClassVar[frozenset[str]] = frozenset({"cls_hidden", "box_hidden"})
    BRANCHES: ClassVar[dict[str, str]] = {"cls_hidden": "cls", "box_hidden": "reg"}

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: ZeroHead, num_classes: int,
                 image_size: int, strides: list[int], neck_channels: list[int],
                 nms_iou: float = 0.7, assigner: dict | None = None,
                 loss_weights: dict[str, float] | None = None) -> None:
        super().__init__(backbone, neck, num_classes, image_size, strides, neck_channels,
                         predictions_per_location=1)
        self.head = head
        self.reg_max = head.reg_max
        self.nms_iou = float(nms_iou)
        self.assigner = dict(assigner or {})
        self.loss_weights = {**LOSS_WEIGHTS, **(loss_weights or {})}

    def forward_head(self, feats: list[torch.Tensor], taps: frozenset[str]
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Class logits ``[B, N, K]`` and box distributions ``[B, N, 4 * (reg_max + 1)]``."""
        cls_logits, box_out = self.head(feats)
        return cls_logits, box_out, {name: list(feats) for name in taps}

    def describe_head(self) -> dict[str, str]:
        """ZeroHead's layout, the GFL losses and AlignOTA's settings."""
        w, a = self.loss_weights, {**ALIGN_OTA_DEFAULTS, **self.assigner}
        strides = "/".join(str(s) for s in self.strides)
        return {
            "head": f"ZeroHead: per level one class and one box projection straight from the "
                    f"neck (no tower), one point per location at strides {strides}; box sides "
                    f"as distributions over {self.reg_max + 1} bins (DFL, reg_max "
                    f"{self.reg_max}); class-wise NMS at IoU {self.nms_iou:g}",
            "loss": f"quality focal (IoU-aware class scores) x {w['qfl']:g} + GIoU x "
                    f"{w['giou']:g} + DFL x {w['dfl']:g}, the box terms weighted by each "
                    "positive's best score",
            "assignment": f"AlignOTA per image: candidates are points within {a['radius']:g} "
                          f"strides of a box centre; cost {a['cls_weight']:g} x class cost + "
                          f"{a['iou_weight']:g} x -log IoU of the predicted box; each box takes "
                          f"its dynamic k (sum of its top-{a['topk']} IoUs) cheapest points",
        }

    def _branch(self, tap: str) -> str:
        if tap not in self.BRANCHES:
            raise ValueError(f"{type(self).__name__} has no head tap {tap!r}; it offers "
                             f"{sorted(self.BRANCHES)}")
        return self.BRANCHES[tap]

    def head_width(self, tap: str, level: int) -> int:
        """The neck's width at ``level`` (ZeroHead projects the neck outputs directly)."""
        self._branch(tap)
        return int(self.neck_channels[level])

    def head_layers(self, tap: str) -> int:
        """0: ZeroHead has no tower."""
        self._branch(tap)
        return 0

    def run_head(self, tap: str, x: torch.Tensor, level: int, start: int) -> torch.Tensor:
        """The branch's projection at ``level`` (there is no tower to run)."""
        if start != 0:
            raise ValueError(f"ZeroHead has no tower layers; start must be 0, got {start}")
        return self.head.project(self._branch(tap), x, level)

    def priors(self, image_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """The stride cell ``[N, 4]`` (xyxy) of every location of every level."""
        cells = []
        for stride, (h, w) in zip(self.strides, level_sizes(image_shape, self.strides)):
            y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                  indexing="ij")
            corner = torch.stack([x, y], -1).reshape(-1, 2).float() * stride
            cells.append(torch.cat([corner, corner + stride], -1))
        return torch.cat(cells)

    def decode_boxes(self, box_out: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """Boxes xyxy: the DFL integral of each side times the stride, around the cell centre."""
        centre = (priors[..., :2] + priors[..., 2:]) / 2
        stride = priors[..., 2:3] - priors[..., 0:1]
        return distance_to_box(centre, dfl_integral(box_out, self.reg_max) * stride)

    def for_deployment(self) -> PointDetector:
        """Every RepConv (neck and TinyNAS backbones) fused into one 3x3 conv (eval mode)."""
        return reparameterize(self.eval())

    def box_bins(self) -> int:
        """``reg_max + 1`` bins per side: the box outputs are DFL distributions."""
        return self.reg_max + 1

    def prediction_signature(self) -> tuple:
        """One point per location: point heads pair location by location."""
        return ("points", 1)

    def _targets(self, output: DetectorOutput, targets: list[dict], priors: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """AlignOTA per image: labels ``[B, N]`` (-1 background), IoU quality ``[B, N]``,
        matched boxes ``[B, N, 4]`` and predicted boxes ``[B, N, 4]``."""
        centres = (priors[:, :2] + priors[:, 2:]) / 2
        strides = priors[:, 2] - priors[:, 0]
        pred_boxes = self.decode_boxes(output.box_deltas, priors)
        scores = output.cls_logits.detach().float().sigmoid()
        labels = torch.full(scores.shape[:2], -1, dtype=torch.long, device=scores.device)
        quality = scores.new_zeros(scores.shape[:2])
        matched = pred_boxes.new_zeros(pred_boxes.shape)
        for b, target in enumerate(targets):
            boxes = target["boxes"].to(scores.device).float().reshape(-1, 4)
            gt_labels = target["labels"].to(scores.device).reshape(-1)
            result = align_ota_assign(scores[b], centres, strides, pred_boxes[b].detach(),
                                      boxes, gt_labels, **self.assigner)
            pos = result.positive
            labels[b, pos] = gt_labels[result.gt[pos]].long()
            quality[b, pos] = result.iou[pos]
            matched[b, pos] = boxes[result.gt[pos]]
        return labels, quality, matched, pred_boxes

    def loss(self, output: DetectorOutput, targets: list[dict], across_ranks: bool = False
             ) -> dict[str, torch.Tensor]:
        """QFL + GIoU + DFL (see the module docstring); ``across_ranks``: the normalisers are
        averaged over the DDP processes (a collective call every rank must make)."""
        priors = self.priors(self.output_shape(output), output.cls_logits.device)
        labels, quality, matched, pred_boxes = self._targets(output, targets, priors)
        pos = labels >= 0
        num_pos = _mean_over_ranks(pos.sum().float(), across_ranks).clamp(min=1.0)
        logits = output.cls_logits.float()
        qfl = quality_focal_loss(logits.flatten(0, 1), labels.flatten(), quality.flatten())
        cls_loss = qfl.sum() / num_pos
        weight = logits.detach()[pos].sigmoid().amax(-1)  # [P]
        norm = _mean_over_ranks(weight.sum(), across_ranks).clamp(min=1.0)
        stride = (priors[:, 2] - priors[:, 0]).expand(pos.shape)[pos][:, None]  # [P, 1]
        centre = ((priors[:, :2] + priors[:, 2:]) / 2).expand(*pos.shape, 2)[pos]
        giou = (giou_loss(pred_boxes[pos], matched[pos]) * weight).sum() / norm
        dist_target = box_to_distance(centre / stride, matched[pos] / stride, self.reg_max)
        dist_logits = output.box_deltas[pos].float().reshape(-1, self.reg_max + 1)
        dfl = distribution_focal_loss(dist_logits, dist_target.reshape(-1))
        dfl = (dfl * weight.repeat_interleave(4)).sum() / (4.0 * norm)
        w = self.loss_weights
        box_loss = w["giou"] * giou + w["dfl"] * dfl
        cls_loss = w["qfl"] * cls_loss
        return {"loss": cls_loss + box_loss, "cls_loss": cls_loss, "box_loss": box_loss,
                "giou_loss": giou.detach(), "dfl_loss": dfl.detach()}
