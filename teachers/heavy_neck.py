"""A DAMO-YOLO-style heavy-neck teacher: timm backbone, RepGFPN-like neck, light shared head.

"Large neck, small head" (Xu et al. 2022, DAMO-YOLO): the neck is DAMO-YOLO's Efficient
RepGFPN (``distill.models.repgfpn``: CSP fusion stages of reversed RepConv blocks, queen fusion,
per-level widths ``neck_widths`` and depth multiplier ``neck_depth``).

Simplified or changed: the backbone is any timm model, so 1x1 conv-BN-SiLU laterals first map
C3..C5 to the neck widths (DAMO's TinyNAS backbones emit them directly); RepConv branches are
kept unfused (a teacher is never deployed, so there is no re-parameterisation step); no SPP;
the head is anchor-based, with the shared anchors, focal loss and assigner of
``distill.models`` instead of DAMO's anchor-free ZeroHead with GFL / AlignOTA: per-level 1x1
stems to ``head_width``, then one shared 3x3 conv-GN-SiLU (``head_convs``) and a 3x3 predictor
per branch.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.models.dense import DenseDetectorConfig, assemble, timm_backbone
from distill.models.detector import Detector
from distill.models.registry import register_preset
from distill.models.repgfpn import RepGFPN


@dataclass
class HeavyNeckConfig(DenseDetectorConfig):
    """Heavy-neck settings; ``neck_widths`` has one entry per level ``min_level..max_level``."""

    neck_widths: tuple[int, ...] = (128, 256, 512)  # DAMO-YOLO-L's neck widths and depth
    neck_depth: float = 2.0  # blocks per fusion stage: round(3 * neck_depth), at least 1
    hidden_ratio: float = 1.0  # RepConv width in a block, as a fraction of the block's width
    head_width: int = 128
    head_convs: int = 1

def build_heavy_neck(cfg: HeavyNeckConfig, num_classes: int, pretrained: bool = False) -> Detector:
    """Build the heavy-neck ``Detector`` from ``cfg`` (``pretrained``: timm backbone weights)."""
    if not 2 <= cfg.min_level < cfg.max_level <= 5:
        raise ValueError(
            f"min_level {cfg.min_level} / max_level {cfg.max_level}: the heavy neck needs "
            "2 <= min_level < max_level <= 5 (backbone levels only)"
        )
    if len(cfg.neck_widths) != len(cfg.strides):
        raise ValueError(
            f"neck_widths {list(cfg.neck_widths)}: need one width per level "
            f"P{cfg.min_level}..P{cfg.max_level}"
        )
    backbone = timm_backbone(cfg, pretrained, cfg.strides)
    neck = RepGFPN(
        backbone.channels,
        list(cfg.neck_widths),
        depth=max(1, round(3 * cfg.neck_depth)),
        hidden_ratio=cfg.hidden_ratio,
    )
    return assemble(
        cfg,
        backbone,
        neck,
        neck.out_channels,
        num_classes,
        depth=cfg.head_convs,
        width=cfg.head_width,
        norm="gn",
        act="silu",
    )


def describe(cfg: HeavyNeckConfig) -> str:
    """One line for ``distill info``."""
    widths = "/".join(str(w) for w in cfg.neck_widths)
    return (
        f"DAMO-style heavy-neck teacher ({cfg.backbone}, RepGFPN {widths} x"
        f"{max(1, round(3 * cfg.neck_depth))}, light head, {cfg.image_size}px)"
    )


HEAVY_NECK_PRESETS: dict[str, HeavyNeckConfig] = {
    "damo_heavy_neck": HeavyNeckConfig("damo_heavy_neck"),
    # smoke-test size: resnet18, narrow single-block neck, 128 px
    "damo_heavy_neck_tiny": HeavyNeckConfig(
        "damo_heavy_neck_tiny",
        image_size=128,
        backbone="resnet18",
        neck_widths=(32, 64, 128),
        neck_depth=1 / 3,
        head_width=32,
    ),
}

for _cfg in HEAVY_NECK_PRESETS.values():
    register_preset(_cfg.name, build_heavy_neck, _cfg, describe(_cfg))
