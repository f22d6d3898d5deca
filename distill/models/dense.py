"""Anchor-based dense detectors assembled from a timm backbone, a neck and two ``ConvHead``s.

``DenseDetectorConfig`` holds what such families share (input size, backbone, levels, anchors);
RetinaNet and the heavy-neck teacher (``teachers/``) and the SM-NAS students build on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from .anchor_detector import AnchorDetector
from .anchors import AnchorGenerator
from .backbone import TimmBackbone
from .conv_head import ConvHead
from .detector import Detector
from .options import DetectorOptions, check_light_block, light_positions
from .registry import replace_config

# RetinaNet's aspect ratios 1:2, 1:1, 2:1 at equal area, as (width, height) multipliers
EQUAL_AREA_ASPECTS: tuple[tuple[float, float], ...] = (
    (1.0, 1.0),
    (math.sqrt(2.0), math.sqrt(0.5)),
    (math.sqrt(0.5), math.sqrt(2.0)),
)


@dataclass
class DenseDetectorConfig(DetectorOptions):
    """Settings every dense anchor family has: input size, timm backbone, levels and anchors, and
    the ``DetectorOptions`` (light head levels, norm)."""

    name: str
    image_size: int = 640
    backbone: str = "resnet50"  # any timm model with ``features_only`` support
    backbone_weights: str | None = None  # local timm state dict for the backbone
    drop_path_rate: float = 0.0  # backbone stochastic depth (passed to timm only when > 0)
    bn_momentum: float | None = None  # BatchNorm momentum for every BN; None keeps the defaults
    min_level: int = 3  # finest neck level (stride 2**min_level)
    max_level: int = 5  # coarsest neck level
    num_scales: int = 3  # anchor octaves per location
    aspect_ratios: tuple[tuple[float, float], ...] = EQUAL_AREA_ASPECTS
    anchor_scale: float = 4.0  # anchor side = anchor_scale * stride (times the octave factor)

    def replace(self, **overrides: Any) -> DenseDetectorConfig:
        """Copy with ``overrides`` applied; unknown keys raise ``ValueError``."""
        return replace_config(self, **overrides)

    @property
    def strides(self) -> list[int]:
        """Strides of the neck levels, ``2**min_level`` .. ``2**max_level``."""
        return [2**level for level in range(self.min_level, self.max_level + 1)]


def timm_backbone(cfg: DenseDetectorConfig, pretrained: bool, strides: list[int]) -> TimmBackbone:
    """The timm ``features_only`` backbone of ``cfg`` returning the maps at ``strides``."""
    return TimmBackbone.from_config(cfg, pretrained, strides=tuple(strides), num_extra=0)


def assemble(
    cfg: DenseDetectorConfig,
    backbone: nn.Module,
    neck: nn.Module,
    neck_channels: list[int],
    num_classes: int,
    loss_cfg: dict[str, Any] | None = None,
    **head_args: Any,
) -> Detector:
    """A ``Detector`` from backbone and neck: class/box ``ConvHead``s and the shared anchors;
    ``loss_cfg``: keyword overrides of ``detection_loss`` (e.g. the IoU thresholds). The heads
    get ``cfg``'s light levels, and GroupNorm + WS towers for ``norm: gn_ws`` (whatever
    ``head_args`` says of their norm)."""
    anchors = AnchorGenerator(cfg.strides, cfg.num_scales, cfg.aspect_ratios, cfg.anchor_scale)
    light = light_positions(cfg.light_levels, cfg.strides)
    check_light_block(cfg.light_block, separable_head=False, light=light)
    if cfg.norm == "gn_ws":
        head_args["norm"] = "gn_ws"
    common = dict(in_channels=neck_channels, num_anchors=anchors.num_anchors, light=light,
                  light_block=cfg.light_block, light_depth=cfg.light_depth, **head_args)
    return AnchorDetector(
        backbone=backbone,
        neck=neck,
        class_head=ConvHead(num_outputs=num_classes, prior_prob=0.01, **common),
        box_head=ConvHead(num_outputs=4, **common),
        anchors=anchors,
        num_classes=num_classes,
        image_size=cfg.image_size,
        strides=cfg.strides,
        neck_channels=neck_channels,
        loss_cfg=loss_cfg,
    )

