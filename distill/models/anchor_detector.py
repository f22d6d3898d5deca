"""``AnchorDetector``: the anchor-based implementation of the model contract (EfficientDet,
RetinaNet, the heavy-neck teacher): class and box heads over anchors, effdet's assignment and
loss, Faster R-CNN box coding."""

from __future__ import annotations

from inspect import Parameter, signature
from typing import ClassVar

import torch
from torch import nn

from .anchors import AnchorGenerator, BoxCoder
from .assigner import pad_targets
from .detector import Detector, DetectorOutput
from .losses import detection_loss


class AnchorDetector(Detector):
    """Anchor-based one-stage detector (EfficientDet layout) following the model contract.

    Taps: ``cls_hidden`` / ``box_hidden``, the class / box heads' tower outputs per level (the
    inputs of their predictors; CrossKD runs them through the teacher's head).
    """

    TAPS: ClassVar[frozenset[str]] = frozenset({"cls_hidden", "box_hidden"})

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        class_head: nn.Module,
        box_head: nn.Module,
        anchors: AnchorGenerator,
        num_classes: int,
        image_size: int,
        strides: list[int],
        neck_channels: list[int],
        loss_cfg: dict | None = None,
    ) -> None:
        super().__init__(backbone, neck, num_classes, image_size, strides, neck_channels,
                         predictions_per_location=anchors.num_anchors)
        self.class_head = class_head
        self.box_head = box_head
        self.anchor_generator = anchors
        self.box_coder = BoxCoder()
        self.loss_cfg = dict(loss_cfg or {})

    def anchors(self, image_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Anchors ``[A, 4]`` xyxy for an input of ``image_shape`` (cached)."""
        return self.anchor_generator(image_shape, device)

    priors = anchors

    def forward_head(self, feats: list[torch.Tensor], taps: frozenset[str]
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Class logits ``[B, A, K]``, box deltas ``[B, A, 4]`` and the asked-for taps."""
        if not taps:
            return self.class_head(feats), self.box_head(feats), {}
        cls_logits, cls_hidden = self.class_head(feats, return_hidden=True)
        box_deltas, box_hidden = self.box_head(feats, return_hidden=True)
        hidden = {"cls_hidden": cls_hidden, "box_hidden": box_hidden}
        return cls_logits, box_deltas, {name: hidden[name] for name in taps}

    def describe_head(self) -> dict[str, str]:
        """The class / box towers and anchors, focal + Huber loss, IoU-threshold assignment."""
        defaults = {name: p.default for name, p in signature(detection_loss).parameters.items()
                    if p.default is not Parameter.empty}
        gen, cfg = self.anchor_generator, {**defaults, **self.loss_cfg}
        head = self.class_head
        strides = "/".join(str(s) for s in self.strides)
        return {
            "head": f"class and box towers of {head.num_layers} layers x {head.width} channels "
                    f"(shared by the levels), {gen.num_anchors} anchors per location "
                    f"({gen.num_scales} scales x {len(gen.aspect_ratios)} aspect ratios) at "
                    f"strides {strides}; box deltas; class-wise NMS at IoU {self.nms_iou:g}",
            "loss": f"focal (alpha {cfg['alpha']:g}, gamma {cfg['gamma']:g}) + Huber on the "
                    f"box deltas x {cfg['box_weight']:g}, over the positives + 1",
            "assignment": f"IoU with the anchors: positive at >= {cfg['pos_iou']:g}, "
                          f"background below {cfg['neg_iou']:g}"
                          + (", ignored between" if cfg["neg_iou"] < cfg["pos_iou"] else ""),
        }

    def _branch(self, tap: str) -> nn.Module:
        """The head whose tower output ``tap`` is."""
        heads = {"cls_hidden": self.class_head, "box_hidden": self.box_head}
        if tap not in heads:
            raise ValueError(f"{type(self).__name__} has no head tap {tap!r}; it offers "
                             f"{sorted(heads)}")
        return heads[tap]

    def head_width(self, tap: str, level: int) -> int:
        """The tower width of the head (the same at every level)."""
        return int(self._branch(tap).width)

    def head_layers(self, tap: str) -> int:
        """The head's tower depth."""
        return int(self._branch(tap).num_layers)

    def run_head(self, tap: str, x: torch.Tensor, level: int, start: int) -> torch.Tensor:
        """Tower layers ``start..`` of the level and the shared predictor."""
        head = self._branch(tap)
        return head.project(head.run_tower(x, level, start=start))

    def loss(
        self, output: DetectorOutput, targets: list[dict], across_ranks: bool = False
    ) -> dict[str, torch.Tensor]:
        """Focal + Huber loss against ``targets`` (list of dicts with ``boxes``, ``labels``);
        ``across_ranks``: normalised by the positives of all DDP processes (training)."""
        device = output.cls_logits.device
        anchors = self.anchors(self.output_shape(output), device)
        padded = pad_targets(targets, device)
        return detection_loss(
            output.cls_logits, output.box_deltas, anchors, padded, self.box_coder,
            across_ranks=across_ranks, **self.loss_cfg,
        )

    def decode_boxes(self, box_out: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """Boxes xyxy from the (dx, dy, dw, dh) deltas relative to the anchors ``priors``."""
        return self.box_coder.decode(box_out, priors)

    def prediction_signature(self) -> tuple:
        """Anchor scales, aspect ratios and anchor scale: equal ones pair anchor by anchor."""
        gen = self.anchor_generator
        return ("anchors", gen.num_scales, tuple(gen.aspect_ratios), float(gen.anchor_scale))
