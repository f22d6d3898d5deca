"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection") on any timm backbone.

Backbone maps C3..C5 (found by stride in timm's ``feature_info``), an FPN with lateral 1x1
convs, top-down nearest upsampling and 3x3 output convs, P6 by a stride-2 3x3 conv on C5 (the
paper; ``p6_input="p5"`` as torchvision's v1 model) and P7 = conv(ReLU(P6)); class and box
subnets of ``head_convs`` 3x3 conv + ReLU layers shared over levels (GroupNorm optional, as in
torchvision's v2 model), class bias prior 0.01; 9 anchors per location (3 octaves x ratios
1:2, 1:1, 2:1, side 4 * stride). Loss, assignment and post-processing are the shared ones of
``distill.models`` (focal loss + Huber box loss, IoU 0.5 / 0.4 matching), so RetinaNet trains and
distils exactly like the EfficientDets.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.models.dense import DenseDetectorConfig, assemble, timm_backbone
from distill.models.detector import Detector
from distill.models.fpn import FPN
from distill.models.registry import register_preset

BACKBONE_TOP_LEVEL = 5  # timm backbones end at stride 32; levels above come from extra convs
# RetinaNet (Lin et al. 2017): anchors are positives at IoU >= 0.5, negatives below 0.4
RETINANET_IOU = {"pos_iou": 0.5, "neg_iou": 0.4}


@dataclass
class RetinaNetConfig(DenseDetectorConfig):
    """RetinaNet settings (defaults: the paper's P3..P7, 256-channel FPN, 4-conv subnets)."""

    max_level: int = 7
    fpn_channels: int = 256
    p6_input: str = "c5"  # c5 (paper, torchvision v2) | p5 (torchvision v1)
    head_convs: int = 4
    head_norm: str | None = None  # None (paper) | gn (GroupNorm, torchvision v2)

def build_retinanet(cfg: RetinaNetConfig, num_classes: int, pretrained: bool = False) -> Detector:
    """Build a RetinaNet ``Detector`` from ``cfg`` (``pretrained``: timm backbone weights)."""
    if not 2 <= cfg.min_level <= min(cfg.max_level, BACKBONE_TOP_LEVEL):
        raise ValueError(
            f"min_level {cfg.min_level} / max_level {cfg.max_level}: need "
            f"2 <= min_level <= max_level and min_level <= {BACKBONE_TOP_LEVEL}"
        )
    if cfg.p6_input not in ("c5", "p5"):
        raise ValueError(f"p6_input: unknown {cfg.p6_input!r}; allowed: c5, p5")
    top = min(cfg.max_level, BACKBONE_TOP_LEVEL)
    backbone = timm_backbone(
        cfg, pretrained, [2**level for level in range(cfg.min_level, top + 1)]
    )
    neck = FPN(
        backbone.channels,
        cfg.fpn_channels,
        num_extra=cfg.max_level - top,
        p6_from_backbone=cfg.p6_input == "c5",
    )
    return assemble(
        cfg,
        backbone,
        neck,
        neck.out_channels,
        num_classes,
        loss_cfg=RETINANET_IOU,
        depth=cfg.head_convs,
        norm=cfg.head_norm,
        act="relu",
    )


def describe(cfg: RetinaNetConfig) -> str:
    """One line for ``distill info``."""
    norm = f" {cfg.head_norm.upper()}" if cfg.head_norm not in (None, "none") else ""
    return (
        f"RetinaNet teacher ({cfg.backbone}, FPN {cfg.fpn_channels} P{cfg.min_level}-"
        f"P{cfg.max_level}, {cfg.head_convs}-conv{norm} subnets, {cfg.image_size}px)"
    )


# 640 px: a multiple of 128 (as training needs) near the paper's 600-800 px scales, and the
# input DAMO-YOLO uses, so both teacher families run at one size.
RETINANET_PRESETS: dict[str, RetinaNetConfig] = {
    "retinanet": RetinaNetConfig("retinanet"),  # any timm backbone: override backbone=NAME
    "retinanet_resnet50": RetinaNetConfig("retinanet_resnet50", backbone="resnet50"),
    "retinanet_resnet101": RetinaNetConfig("retinanet_resnet101", backbone="resnet101"),
    "retinanet_convnext_tiny": RetinaNetConfig(
        "retinanet_convnext_tiny", backbone="convnext_tiny"
    ),
    # smoke-test size: resnet18, 64-channel FPN on P3..P5 only, 2-conv subnets, 128 px; with
    # GroupNorm, which keeps the subnets stable under the AdamW recipes (spiky without)
    "retinanet_tiny": RetinaNetConfig(
        "retinanet_tiny",
        image_size=128,
        backbone="resnet18",
        max_level=5,
        fpn_channels=64,
        head_convs=2,
        head_norm="gn",
    ),
}

_DESCRIPTIONS = {"retinanet": "RetinaNet on any timm backbone (override backbone=NAME; default "
                              "resnet50)"}
for _cfg in RETINANET_PRESETS.values():
    register_preset(_cfg.name, build_retinanet, _cfg,
                    _DESCRIPTIONS.get(_cfg.name) or describe(_cfg))
