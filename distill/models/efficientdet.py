"""EfficientDet family: compound-scaled configs (paper table for D0..D7) and the builder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from .anchor_detector import AnchorDetector
from .anchors import AnchorGenerator
from .backbone import TimmBackbone
from .bifpn import BiFPN
from .detector import Detector
from .head import Head
from .layers import SeparableConv
from .options import DetectorOptions, check_light_block, light_positions
from .registry import register_preset, replace_config

# phi: (image size, backbone, BiFPN width, BiFPN repeats, head repeats, fusion) -- paper table
PAPER_TABLE: dict[int, tuple[int, str, int, int, int, str]] = {
    0: (512, "efficientnet_b0", 64, 3, 3, "fast"),
    1: (640, "efficientnet_b1", 88, 4, 3, "fast"),
    2: (768, "efficientnet_b2", 112, 5, 3, "fast"),
    3: (896, "efficientnet_b3", 160, 6, 4, "fast"),
    4: (1024, "efficientnet_b4", 224, 7, 4, "fast"),
    5: (1280, "efficientnet_b5", 288, 7, 4, "fast"),
    6: (1280, "efficientnet_b6", 384, 8, 5, "sum"),
    7: (1536, "efficientnet_b6", 384, 8, 5, "sum"),
}
# backbones below B0 for negative phi (timm TinyNets, same EfficientNet blocks)
SMALL_BACKBONES: dict[int, str] = {-1: "tinynet_b", -2: "tinynet_c", -3: "tinynet_e"}
# effdet's native efficientdet_d4/d5 keep its default SAME padding in the BiFPN (with the
# symmetric-padded efficientnet_b4/b5 backbones); its native d0..d3 pad symmetrically.
SAME_PADDING_NATIVE = (4, 5)


ConfigT = TypeVar("ConfigT", bound="EfficientDetParts")


@dataclass(kw_only=True)
class EfficientDetParts(DetectorOptions):
    """The settings every EfficientDet-style config shares (keyword-only, after each config's
    own fields): BiFPN ``fusion``, the anchors, ``conv_bias`` (a bias on the convs before
    BatchNorm, effdet's ``redundant_bias``), ``padding`` of the BiFPN's and extra levels'
    max-pools ("" symmetric as PyTorch, "same" TensorFlow SAME as effdet's ``pad_type``; the
    backbone pads as its timm name says) and ``bn_momentum``."""

    fusion: str = "fast"
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
    anchor_scale: float = 4.0
    conv_bias: bool = True
    padding: str = ""
    # BatchNorm momentum (PyTorch convention) for every BN of the model; None keeps the defaults
    # (0.01 in BiFPN and heads, timm's in the backbone). Short runs want 0.1: with 0.01 the
    # running statistics trail the weights for hundreds of steps and eval-mode outputs drift.
    bn_momentum: float | None = None

    def replace(self: ConfigT, **overrides: Any) -> ConfigT:
        """Copy with ``overrides`` applied; unknown keys raise ``ValueError``."""
        return replace_config(self, **overrides)


@dataclass
class EfficientDetConfig(EfficientDetParts):
    """Everything needed to build one EfficientDet-style detector: these fields, then the
    ``EfficientDetParts`` and ``DetectorOptions`` (``light_levels``, ``light_depth``,
    ``light_block``, ``norm``), keyword-only."""

    name: str
    image_size: int
    backbone: str
    fpn_channels: int
    fpn_repeats: int
    head_repeats: int
    drop_path_rate: float = 0.2
    backbone_weights: str | None = None


def round_to(value: float, multiple: int, minimum: int | None = None) -> int:
    """``value`` rounded to the nearest multiple of ``multiple`` (at least ``minimum``)."""
    minimum = multiple if minimum is None else minimum
    return max(minimum, int(value / multiple + 0.5) * multiple)


def efficientdet_config(phi: float, name: str | None = None) -> EfficientDetConfig:
    """Compound-scaled config for any (also fractional or negative) ``phi``.

    ``W = 64 * 1.35**phi`` (multiple of 8), ``D_bifpn = 3 + phi``, ``D_head = 3 + floor(phi / 3)``,
    ``R = 512 + 128 * phi`` (multiple of 128); the paper table wins for integer phi in 0..7.
    Backbone: EfficientNet-B{round(phi)}, TinyNets below 0.
    """
    name = name or f"efficientdet_phi{phi:g}"
    if float(phi).is_integer() and int(phi) in PAPER_TABLE:
        size, backbone, width, fpn_rep, head_rep, fusion = PAPER_TABLE[int(phi)]
        padding = "same" if int(phi) in SAME_PADDING_NATIVE else ""
        return EfficientDetConfig(
            name, size, backbone, width, fpn_rep, head_rep, fusion=fusion, padding=padding
        )
    level = int(math.floor(phi + 0.5))
    if level >= 0:
        backbone = f"efficientnet_b{min(level, 7)}"
    else:
        backbone = SMALL_BACKBONES[max(level, min(SMALL_BACKBONES))]
    return EfficientDetConfig(
        name=name,
        image_size=round_to(512 + 128 * phi, 128),
        backbone=backbone,
        fpn_channels=round_to(64 * 1.35**phi, 8),
        fpn_repeats=max(1, int(math.floor(3 + phi + 0.5))),
        head_repeats=max(1, 3 + math.floor(phi / 3)),
        fusion="sum" if phi >= 6 else "fast",
    )


def _glorot_init(module: nn.Module) -> None:
    """TF-style Glorot-uniform init of the BiFPN separable convs (biases zero)."""
    for m in module.modules():
        if isinstance(m, SeparableConv):
            for conv in (m.conv_dw, m.conv_pw):
                fan_in = conv.weight[0].numel()
                fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel() // conv.groups
                nn.init.uniform_(conv.weight, -1, 1)
                conv.weight.data.mul_(math.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2.0)))
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)


def build_efficientdet(
    cfg: EfficientDetConfig, num_classes: int, pretrained: bool = False
) -> Detector:
    """Build a ``Detector`` from ``cfg`` (pass ``pretrained`` to timm for the backbone)."""
    backbone = TimmBackbone.from_config(
        cfg, pretrained, num_extra=2, extra_channels=cfg.fpn_channels, conv_bias=cfg.conv_bias,
        padding=cfg.padding,
    )
    return efficientdet_on_backbone(backbone, cfg, num_classes)


def efficientdet_on_backbone(backbone: nn.Module, cfg: Any, num_classes: int) -> Detector:
    """BiFPN, class and box heads and anchors of ``cfg`` on ``backbone`` (which has ``channels``
    and ``strides`` per level). ``cfg`` needs the neck, head, anchor and ``DetectorOptions``
    fields of ``EfficientDetConfig``; any backbone with five levels (e.g. a searched one) fits.
    ``norm: gn_ws`` is applied to the rest of the model by ``build_configured``."""
    num_levels = len(backbone.strides)
    neck = BiFPN(
        backbone.channels,
        cfg.fpn_channels,
        cfg.fpn_repeats,
        cfg.fusion,
        cfg.conv_bias,
        cfg.padding,
    )
    _glorot_init(neck)
    num_anchors = cfg.num_scales * len(cfg.aspect_ratios)
    light = light_positions(cfg.light_levels, backbone.strides)
    check_light_block(cfg.light_block, separable_head=True, light=light)
    head_args = dict(
        channels=cfg.fpn_channels,
        num_anchors=num_anchors,
        repeats=cfg.head_repeats,
        num_levels=num_levels,
        conv_bias=cfg.conv_bias,
        light=light,
        light_block=cfg.light_block,
        light_depth=cfg.light_depth,
        norm=cfg.norm,
    )
    return AnchorDetector(
        backbone=backbone,
        neck=neck,
        class_head=Head(num_outputs=num_classes, prior_prob=0.01, **head_args),
        box_head=Head(num_outputs=4, **head_args),
        anchors=AnchorGenerator(
            backbone.strides, cfg.num_scales, cfg.aspect_ratios, cfg.anchor_scale
        ),
        num_classes=num_classes,
        image_size=cfg.image_size,
        strides=backbone.strides,
        neck_channels=neck.out_channels,
    )


def tf_efficientdet_config(phi: int) -> EfficientDetConfig:
    """effdet's ``tf_efficientdet_d{phi}``: TF-ported weights, SAME padding everywhere.

    timm ``tf_efficientnet_b*`` backbone, SAME max-pools in the BiFPN, and anchor scale 5 for D7.
    """
    cfg = efficientdet_config(phi, f"tf_efficientdet_d{phi}")
    return cfg.replace(
        backbone=f"tf_{cfg.backbone}", padding="same", anchor_scale=5.0 if phi == 7 else 4.0
    )


def _register_paper_models() -> None:
    for phi in PAPER_TABLE:
        for cfg in (efficientdet_config(phi, f"efficientdet_d{phi}"), tf_efficientdet_config(phi)):
            desc = (
                f"EfficientDet-D{phi} ({cfg.backbone}, BiFPN {cfg.fpn_channels}x"
                f"{cfg.fpn_repeats}, head x{cfg.head_repeats}, {cfg.image_size}px"
                f"{', SAME padding' if cfg.padding == 'same' else ''})"
            )
            register_preset(cfg.name, build_efficientdet, cfg, desc)


_register_paper_models()
