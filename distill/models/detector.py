"""The model contract: ``Detector`` (backbone -> neck -> head) and its raw ``DetectorOutput``.

A family implements the head side: what its head returns, its loss (assignment included), how
its box outputs decode, and which intermediate outputs (taps) it can return for distillation.
``AnchorDetector`` (``anchor_detector.py``) is one implementation: anchor-based dense heads.
Anything written against this class (training, evaluation, predict, export, the distillation
terms) works for every family; see docs/ARCHITECTURE.md, "Model contract".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .anchors import level_sizes
from .postprocess import postprocess


@dataclass
class DetectorOutput:
    """Raw outputs of a forward pass.

    ``features``: the neck outputs, one per level. ``cls_logits`` ``[B, N, K]`` and
    ``box_deltas`` ``[B, N, R]``: one row per prediction, over levels, then locations
    (row-major), then the predictions of a location; ``R`` is the family's box encoding (4
    anchor deltas; ``4 * (reg_max + 1)`` for a distribution head). ``image_shape`` is the
    (h, w) of the input. ``taps``: the intermediate outputs asked for by name (see
    ``Detector.TAPS``), e.g. ``cls_hidden`` / ``box_hidden``, the heads' tower outputs per level.
    """

    features: list[torch.Tensor]
    cls_logits: torch.Tensor
    box_deltas: torch.Tensor
    image_shape: tuple[int, int] | None = None
    taps: dict[str, list[torch.Tensor]] = field(default_factory=dict)


class Detector(nn.Module):
    """Base of every detector family: backbone and neck here, the head side in the subclass.

    A subclass sets ``TAPS`` and ``predictions_per_location`` and implements ``forward_head``,
    ``loss``, ``priors``, ``decode_boxes`` and ``prediction_signature``; ``forward``,
    ``predict`` and the level bookkeeping are shared.
    """

    TAPS: ClassVar[frozenset[str]] = frozenset()  # intermediate outputs forward can return
    nms_iou: float = 0.5  # class-wise NMS IoU of predict and the export graph (a family's own)

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        image_size: int,
        strides: list[int],
        neck_channels: list[int],
        predictions_per_location: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.num_classes = num_classes
        self.image_size = image_size
        self.strides = list(strides)
        self.neck_channels = list(neck_channels)
        self.predictions_per_location = int(predictions_per_location)
        self.channels_last = False

    def set_channels_last(self, enabled: bool = True) -> Detector:
        """Keep weights and inputs in channels_last (NHWC) memory format, or back to NCHW.

        Same numbers up to float rounding; convolutions run faster in NHWC on CPUs (oneDNN) and
        on tensor-core GPUs under mixed precision. ``forward`` converts its input to match.
        """
        self.channels_last = bool(enabled)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return self.to(memory_format=fmt)

    def forward(self, images: torch.Tensor, taps: Collection[str] = ()) -> DetectorOutput:
        """Run the network on ``images`` ``[B, 3, H, W]``; ``taps``: names from ``TAPS`` whose
        outputs the result also carries (a distillation term declares the ones it needs)."""
        unknown = sorted(set(taps) - self.TAPS)
        if unknown:
            raise ValueError(f"{type(self).__name__} has no tap(s) {unknown}; it offers "
                             f"{sorted(self.TAPS) or 'none'}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.neck(self.backbone(images))
        cls_logits, box_out, tapped = self.forward_head(feats, frozenset(taps))
        shape = (int(images.shape[-2]), int(images.shape[-1]))
        return DetectorOutput(feats, cls_logits, box_out, shape, tapped)

    def forward_head(self, feats: list[torch.Tensor], taps: frozenset[str]
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[torch.Tensor]]]:
        """``(cls_logits, box outputs, {tap: per-level tensors})`` from the neck outputs."""
        raise NotImplementedError

    def loss(self, output: DetectorOutput, targets: list[dict], across_ranks: bool = False
             ) -> dict[str, torch.Tensor]:
        """``loss``, ``cls_loss``, ``box_loss`` (scalars) against ``targets`` (per image
        ``boxes`` xyxy input pixels, ``labels``); ``across_ranks``: normalised over all DDP
        processes (training)."""
        raise NotImplementedError

    def priors(self, image_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """The reference box ``[N, 4]`` (xyxy pixels) of every prediction: anchors, or for a
        point head the stride-sized cell of each point. Decoding and box distillation use it."""
        raise NotImplementedError

    def decode_boxes(self, box_out: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """Boxes ``[..., 4]`` xyxy from box outputs ``[..., R]`` and their ``priors``."""
        raise NotImplementedError

    def prediction_signature(self) -> tuple:
        """What must be equal for two models' predictions to pair one to one at each location
        (e.g. the anchor settings); compared by the prediction-level distillation terms."""
        raise NotImplementedError

    def describe_head(self) -> dict[str, str]:
        """What ``distill check`` says of the head side, one line each: ``head`` (its layout),
        ``loss`` and ``assignment`` (how training targets are chosen)."""
        return {"head": type(self).__name__}

    def head_width(self, tap: str, level: int) -> int:
        """Channels of the head feature ``tap`` (a ``TAPS`` name) at ``level``: the input of
        that branch's predictor, what CrossKD aligns a student's feature to."""
        raise NotImplementedError(f"{type(self).__name__} offers no head taps")

    def head_layers(self, tap: str) -> int:
        """Tower layers of the branch that ``tap`` is the output of (0: no tower, the tap is
        the branch's input)."""
        raise NotImplementedError(f"{type(self).__name__} offers no head taps")

    def run_head(self, tap: str, x: torch.Tensor, level: int, start: int) -> torch.Tensor:
        """That branch's outputs ``[B, H * W * predictions, R]`` at ``level`` from a feature
        ``x`` of the tower's input width, run through tower layers ``start..`` and the
        predictor (``start == head_layers(tap)``: ``x`` is the tap, the predictor only)."""
        raise NotImplementedError(f"{type(self).__name__} offers no head taps")

    def for_deployment(self) -> Detector:
        """The detector as deployed (``distill export``): a family with training-only structure
        (re-parameterisable branches) fuses it here, in eval mode, same outputs; default:
        itself, unchanged."""
        return self

    def box_bins(self) -> int | None:
        """Bins per box side when the box outputs are per-side distributions (DFL heads:
        ``reg_max + 1``; localization distillation compares them); None otherwise."""
        return None

    def output_shape(self, output: DetectorOutput) -> tuple[int, int]:
        """The input (h, w) an output came from (the default size when not recorded)."""
        return output.image_shape or (self.image_size, self.image_size)

    def level_slices(self, image_shape: tuple[int, int]) -> list[slice]:
        """Per level the slice of the prediction axis for inputs of ``image_shape``."""
        slices, start = [], 0
        for h, w in level_sizes(image_shape, self.strides):
            count = h * w * self.predictions_per_location
            slices.append(slice(start, start + count))
            start += count
        return slices

    @torch.no_grad()
    def predict(self, output: DetectorOutput, score_threshold: float = 0.05,
                max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``boxes`` (xyxy input pixels), ``scores``, ``labels``: the
        best 5000 sigmoid scores above the threshold, class-wise NMS at ``nms_iou``, the best
        ``max_detections``."""
        shape = self.output_shape(output)
        return postprocess(
            output.cls_logits, output.box_deltas, self.priors(shape, output.cls_logits.device),
            shape, score_threshold=score_threshold, max_detections=max_detections,
            nms_iou=self.nms_iou, decode=self.decode_boxes,
        )
