"""The ``Detector`` module: backbone -> neck -> class/box heads, with loss and predict."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .anchors import AnchorGenerator, BoxCoder
from .assigner import pad_targets
from .losses import detection_loss
from .postprocess import postprocess


@dataclass
class DetectorOutput:
    """Raw outputs of a forward pass.

    ``features`` are the neck outputs (one per level, the distillation taps); ``cls_logits`` is
    ``[B, A, K]`` and ``box_deltas`` ``[B, A, 4]`` with ``A`` over levels, locations (row-major)
    and anchors of a location. ``image_shape`` is the (h, w) of the input batch.
    ``cls_hidden`` / ``box_hidden``: the heads' tower outputs per level, when asked for.
    """

    features: list[torch.Tensor]
    cls_logits: torch.Tensor
    box_deltas: torch.Tensor
    image_shape: tuple[int, int] | None = None
    cls_hidden: list[torch.Tensor] | None = None
    box_hidden: list[torch.Tensor] | None = None


class Detector(nn.Module):
    """Anchor-based one-stage detector (EfficientDet layout) following the model contract."""

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
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.class_head = class_head
        self.box_head = box_head
        self.anchor_generator = anchors
        self.box_coder = BoxCoder()
        self.num_classes = num_classes
        self.image_size = image_size
        self.strides = list(strides)
        self.neck_channels = list(neck_channels)
        self.loss_cfg = dict(loss_cfg or {})
        self.channels_last = False

    def set_channels_last(self, enabled: bool = True) -> Detector:
        """Keep weights and inputs in channels_last (NHWC) memory format, or back to NCHW.

        Same numbers up to float rounding; convolutions run faster in NHWC on CPUs (oneDNN) and
        on tensor-core GPUs under mixed precision. ``forward`` converts its input to match.
        """
        self.channels_last = bool(enabled)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return self.to(memory_format=fmt)

    def anchors(self, image_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Anchors ``[A, 4]`` xyxy for an input of ``image_shape`` (cached)."""
        return self.anchor_generator(image_shape, device)

    def forward(self, images: torch.Tensor, head_hidden: bool = False) -> DetectorOutput:
        """Run the network on ``images`` ``[B, 3, H, W]``; ``head_hidden`` also keeps the
        heads' tower outputs (the inputs of their predictors)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.neck(self.backbone(images))
        shape = (int(images.shape[-2]), int(images.shape[-1]))
        if head_hidden:
            cls_logits, cls_hidden = self.class_head(feats, return_hidden=True)
            box_deltas, box_hidden = self.box_head(feats, return_hidden=True)
            return DetectorOutput(feats, cls_logits, box_deltas, shape, cls_hidden, box_hidden)
        return DetectorOutput(feats, self.class_head(feats), self.box_head(feats), shape)

    def _shape(self, output: DetectorOutput) -> tuple[int, int]:
        return output.image_shape or (self.image_size, self.image_size)

    def loss(
        self, output: DetectorOutput, targets: list[dict], across_ranks: bool = False
    ) -> dict[str, torch.Tensor]:
        """Focal + Huber loss against ``targets`` (list of dicts with ``boxes``, ``labels``);
        ``across_ranks``: normalised by the positives of all DDP processes (training)."""
        device = output.cls_logits.device
        anchors = self.anchors(self._shape(output), device)
        padded = pad_targets(targets, device)
        return detection_loss(
            output.cls_logits, output.box_deltas, anchors, padded, self.box_coder,
            across_ranks=across_ranks, **self.loss_cfg,
        )

    @torch.no_grad()
    def predict(
        self,
        output: DetectorOutput,
        score_threshold: float = 0.05,
        max_detections: int = 100,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``boxes`` (xyxy input pixels), ``scores``, ``labels``."""
        shape = self._shape(output)
        anchors = self.anchors(shape, output.cls_logits.device)
        return postprocess(
            output.cls_logits,
            output.box_deltas,
            anchors,
            shape,
            score_threshold=score_threshold,
            max_detections=max_detections,
            coder=self.box_coder,
        )
