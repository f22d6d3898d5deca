"""``damo_yolo``: DAMO-YOLO (Xu et al. 2022) as a family: backbone, GiraffeNeckV2, ZeroHead.

- ``backbone``: one of DAMO's TinyNAS structures (mobile ``tinynas_nano_small`` /
  ``_middle`` / ``_large`` for Ns / Nm / Nl, ``students.damo_nano``; residual
  ``tinynas_l20_k1kx`` for T, ``tinynas_l25_k1kx`` for S, CSP ``tinynas_l35_kxkx`` for M,
  ``tinynas_l45_kxkx`` for L, ``students.damo_tinynas``), a searched ``maenas_*`` structure
  or ``structure.json`` (``students.nas``), or a timm model (``features_only``);
- neck: DAMO's Efficient RepGFPN (``distill.models.giraffe.GiraffeNeck``): ``neck_widths``
  (the three output widths), ``neck_depth`` (``round(3 * depth)`` blocks per fusion stage),
  ``hidden_ratio``, ``neck_act``, ``depthwise_neck`` (the nano models');
- head: ``ZeroHead`` with ``reg_max`` and ``head_kernel`` (3; the nano models 1), in
  ``PointDetector`` (GFL losses, AlignOTA, NMS at ``nms_iou``: DAMO's 0.7, nano 0.65);
- training (``model.options``, DAMO's values by default): AlignOTA's ``ota_radius`` (centre
  prior, in strides), ``ota_topk`` (dynamic k's candidates), ``ota_cls_weight`` /
  ``ota_iou_weight`` (cost), and the loss weights ``qfl_weight`` / ``giou_weight`` /
  ``dfl_weight``.

Published sizes reproduced (tests/test_damo_yolo.py, re-parameterised as DAMO counts them):
``damo_yolo_ns`` / ``_nm`` / ``_nl`` (416 px; TinyNAS mobile backbones, depthwise neck, 1x1
head projections: params within 0.3%, FLOPs 2-4% under the table, whose counter also counts the
BatchNorms left in depthwise blocks) and ``damo_yolo_t`` / ``_s`` / ``_m`` / ``_l`` (640 px;
params and FLOPs within 0.5%).
Small presets for CPU runs: ``damo_yolo_pico`` (maenas_dm3, 128 px) and ``damo_yolo_tinynet``
(timm tinynet_e, 256 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from distill.errors import RecipeError
from distill.models.backbone import TimmBackbone
from distill.models.detector import Detector
from distill.models.giraffe import ACTIVATIONS, GiraffeNeck
from distill.models.options import DetectorOptions, option_error
from distill.models.point_detector import PointDetector
from distill.models.registry import register_preset, replace_config
from distill.models.zero_head import ZeroHead
from distill.search.presets import is_structure, resolve_structure
from distill.search.space import load_structure

from .damo_nano import TINYNAS_MOBILE_STRUCTURES, TinyNasMobile
from .damo_tinynas import TINYNAS_NAMES, tinynas_backbone
from .nas.backbone import NasBackbone


@dataclass
class DamoYoloConfig(DetectorOptions):
    """A DAMO-YOLO model (see the module docstring)."""

    name: str
    image_size: int = 640
    backbone: str = "tinynas_l20_k1kx"
    backbone_act: str = "relu"  # TinyNAS backbones only
    backbone_weights: Optional[str] = None  # timm backbones only: a local state dict
    drop_path_rate: float = 0.0  # timm backbones only: stochastic depth
    neck_widths: tuple[int, ...] = (64, 128, 256)
    neck_depth: float = 1.0
    hidden_ratio: float = 1.0
    neck_act: str = "relu"
    reg_max: int = 16
    nms_iou: float = 0.7
    head_kernel: int = 3  # ZeroHead's projection convs (DAMO's nano models: 1)
    depthwise_neck: bool = False  # DAMO's nano models: depthwise downsamplers, mobile blocks
    bn_momentum: Optional[float] = None
    # AlignOTA (DAMO's defaults): centre-prior radius in strides, dynamic-k top-k, cost weights
    ota_radius: float = 2.5
    ota_topk: int = 10
    ota_cls_weight: float = 1.0
    ota_iou_weight: float = 3.0
    # loss weights (DAMO's ZeroHead): quality focal, GIoU, distribution focal
    qfl_weight: float = 1.0
    giou_weight: float = 2.0
    dfl_weight: float = 0.25

    def replace(self, **overrides: Any) -> DamoYoloConfig:
        """Copy with ``overrides`` applied; unknown keys raise ``ValueError``."""
        return replace_config(self, **overrides)

    @property
    def strides(self) -> list[int]:
        """The three point levels: strides 8, 16, 32."""
        return [8, 16, 32]


def check_config(cfg: DamoYoloConfig) -> None:
    """A ``RecipeError`` naming the option for a setting the builder cannot honour."""
    if cfg.light_levels:
        raise option_error("light_levels", "ZeroHead has no tower convs to lighten; leave it "
                                           "empty for damo_yolo")
    if len(cfg.neck_widths) != 3 or min(cfg.neck_widths) < 1:
        raise option_error("neck_widths", f"{list(cfg.neck_widths)}: three positive widths "
                                          "(strides 8, 16, 32)")
    for key in ("backbone_act", "neck_act"):
        if getattr(cfg, key) not in ACTIVATIONS:
            raise option_error(key, f"{getattr(cfg, key)!r}; valid: {', '.join(ACTIVATIONS)}")
    if cfg.reg_max < 1:
        raise option_error("reg_max", f"{cfg.reg_max}, expected >= 1")
    if not 0.0 < cfg.nms_iou <= 1.0:
        raise option_error("nms_iou", f"{cfg.nms_iou}, expected in (0, 1]")
    if not cfg.ota_radius > 0 or cfg.ota_topk < 1:
        raise option_error("ota_radius" if not cfg.ota_radius > 0 else "ota_topk",
                           f"radius {cfg.ota_radius}, top-k {cfg.ota_topk}: expected a radius "
                           "> 0 (in strides) and a top-k >= 1")
    for key in ("ota_cls_weight", "ota_iou_weight", "qfl_weight", "giou_weight", "dfl_weight"):
        if not getattr(cfg, key) >= 0:
            raise option_error(key, f"{getattr(cfg, key)}, expected a weight >= 0")


def build_backbone(cfg: DamoYoloConfig, pretrained: bool) -> nn.Module:
    """The TinyNAS, searched or timm backbone of ``cfg`` (maps at strides 8, 16, 32)."""
    own = (cfg.backbone in TINYNAS_NAMES or cfg.backbone in TINYNAS_MOBILE_STRUCTURES
           or is_structure(cfg.backbone))
    if own and (pretrained or cfg.backbone_weights):
        raise RecipeError(f"model.pretrained: {cfg.backbone!r} has no pretrained weights here; "
                          "train it from scratch or name a timm backbone")
    if own and cfg.drop_path_rate:
        raise RecipeError(f"model.drop_path_rate: {cfg.drop_path_rate}: {cfg.backbone!r} has no "
                          "stochastic depth; set it to 0")
    if cfg.backbone in TINYNAS_NAMES:
        return tinynas_backbone(cfg.backbone, cfg.backbone_act)
    if cfg.backbone in TINYNAS_MOBILE_STRUCTURES:
        return TinyNasMobile(cfg.backbone, cfg.backbone_act)
    if is_structure(cfg.backbone):
        structure = load_structure(resolve_structure(cfg.backbone))
        return NasBackbone(structure, strides=(8, 16, 32), num_extra=0)
    return TimmBackbone.from_config(cfg, pretrained, strides=(8, 16, 32), num_extra=0)


def build_damo_yolo(cfg: DamoYoloConfig, num_classes: int, pretrained: bool = False
                    ) -> Detector:
    """The ``PointDetector`` of ``cfg``."""
    check_config(cfg)
    backbone = build_backbone(cfg, pretrained)
    neck = GiraffeNeck(list(backbone.channels), list(cfg.neck_widths), cfg.neck_depth,
                       cfg.hidden_ratio, cfg.neck_act, cfg.depthwise_neck)
    head = ZeroHead(neck.out_channels, num_classes, cfg.reg_max, cfg.head_kernel)
    assigner = {"radius": cfg.ota_radius, "topk": cfg.ota_topk,
                "cls_weight": cfg.ota_cls_weight, "iou_weight": cfg.ota_iou_weight}
    weights = {"qfl": cfg.qfl_weight, "giou": cfg.giou_weight, "dfl": cfg.dfl_weight}
    return PointDetector(backbone, neck, head, num_classes, cfg.image_size, cfg.strides,
                         neck.out_channels, nms_iou=cfg.nms_iou, assigner=assigner,
                         loss_weights=weights)


def describe(cfg: DamoYoloConfig) -> str:
    """One line for ``distill info``."""
    widths = "/".join(str(w) for w in cfg.neck_widths)
    return (f"DAMO-YOLO: {cfg.backbone}, GiraffeNeckV2 {widths} depth {cfg.neck_depth:g} "
            f"hidden {cfg.hidden_ratio:g}, ZeroHead reg_max {cfg.reg_max}, {cfg.image_size}px")


DAMO_PRESETS: dict[str, DamoYoloConfig] = {
    # DAMO-YOLO-T / -S as published (configs/damoyolo_tinynasL20_T.py, ..._L25_S.py)
    "damo_yolo_t": DamoYoloConfig("damo_yolo_t"),
    "damo_yolo_s": DamoYoloConfig("damo_yolo_s", backbone="tinynas_l25_k1kx",
                                  neck_widths=(128, 256, 512), hidden_ratio=0.75),
    # DAMO-YOLO-M / -L (damoyolo_tinynasL35_M.py, damoyolo_tinynasL45_L.py): CSP backbones, SiLU
    "damo_yolo_m": DamoYoloConfig("damo_yolo_m", backbone="tinynas_l35_kxkx",
                                  backbone_act="silu", neck_widths=(128, 256, 512),
                                  neck_depth=1.5, neck_act="silu"),
    "damo_yolo_l": DamoYoloConfig("damo_yolo_l", backbone="tinynas_l45_kxkx",
                                  backbone_act="silu", neck_widths=(128, 256, 512),
                                  neck_depth=2.0, neck_act="silu"),
    # DAMO-YOLO-Ns / Nm / Nl (damoyolo_tinynasL18_Ns.py, _L18_Nm.py, _L20_Nl.py): mobile
    # backbones, depthwise neck, 1x1 head projections, 416 px
    **{f"damo_yolo_{size}": DamoYoloConfig(
        f"damo_yolo_{size}", image_size=416, backbone=f"tinynas_nano_{structure}",
        backbone_act="silu", neck_widths=widths, neck_depth=0.5, hidden_ratio=0.5,
        neck_act="silu", depthwise_neck=True, reg_max=7, head_kernel=1, nms_iou=0.65)
       for size, structure, widths in [("ns", "small", (40, 80, 160)),
                                       ("nm", "middle", (64, 128, 256)),
                                       ("nl", "large", (80, 160, 320))]},
    # CPU / embedded-data sizes: searched maenas_dm3 backbone at 128 px, tinynet_e at 256 px
    "damo_yolo_pico": DamoYoloConfig("damo_yolo_pico", image_size=128, backbone="maenas_dm3",
                                     neck_widths=(24, 48, 96), neck_depth=1 / 3, reg_max=7,
                                     neck_act="silu"),
    "damo_yolo_tinynet": DamoYoloConfig("damo_yolo_tinynet", image_size=256,
                                        backbone="tinynet_e", neck_widths=(32, 64, 128),
                                        neck_depth=1 / 3, reg_max=7, neck_act="silu"),
}

for _cfg in DAMO_PRESETS.values():
    register_preset(_cfg.name, build_damo_yolo, _cfg, describe(_cfg))
