"""``smnas``: a student put together from the framework's parts, the model of the SM-NAS search.

One config names each structural choice of `distill search --level structural` (SM-NAS):

- ``backbone``: a timm model (``tinynet_e``, ``mobilenetv3_small_100``, ``resnet18``, ...) or a
  searched structure (a ``maenas_*`` preset name or a ``structure.json`` path), optionally
  re-planned by ``channel_plan`` (``distill.search.channel_plan``, the modular level);
- ``neck``: ``bifpn`` (EfficientDet's, ``fpn_repeats`` cells), ``fpn`` (RetinaNet's, one
  top-down pass, so ``fpn_repeats`` must be 1) or ``repgfpn`` (the heavy-neck teacher's RepGFPN,
  ``fpn_repeats`` RepBlocks per fusion stage), ``fpn_channels`` wide at every level, levels
  P3..P``max_level`` (5, 6 or 7);
- heads: on ``bifpn`` EfficientDet's separable heads at the neck's width; on ``fpn`` /
  ``repgfpn`` RetinaNet-style conv heads (GroupNorm of 8-channel groups, SiLU) ``head_width``
  wide (a 1x1 stem per level when it differs from the neck's), ``head_repeats`` deep; effdet's
  anchors everywhere.

A recipe trains one like any preset: ``model: {name: smnas, image_size: 128, backbone:
tinynet_e, options: {neck: fpn, fpn_channels: 32, max_level: 6, head_repeats: 2}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from distill.models.backbone import TimmBackbone
from distill.models.dense import assemble
from distill.models.detector import Detector
from distill.models.efficientdet import EfficientDetParts, efficientdet_on_backbone
from distill.models.fpn import FPN
from distill.models.norms import group_norm
from distill.models.registry import register_preset
from distill.models.repgfpn import RepGFPN
from distill.search.channel_plan import apply_plan, parse_plan
from distill.search.presets import is_structure, resolve_structure, structure_presets
from distill.search.space import load_structure
from distill.search.structural import MAX_LEVELS, NECKS

from .backbone import NasBackbone

BACKBONE_TOP = 5  # backbones end at stride 32 (P5); higher levels are extra ones


@dataclass
class SmNasConfig(EfficientDetParts):
    """The structural choices of an SM-NAS student (see the module docstring) and the anchor,
    norm and padding settings of ``EfficientDetConfig``."""

    name: str
    image_size: int = 128
    backbone: str = "tinynet_e"
    neck: str = "bifpn"
    fpn_channels: int = 24
    fpn_repeats: int = 1
    max_level: int = 7
    head_repeats: int = 2
    head_width: int | None = None  # conv heads (fpn, repgfpn); None: the neck's width
    channel_plan: str | None = None  # searched backbones: e.g. "16 1-2-211-1-2"
    drop_path_rate: float = 0.0  # timm backbones only
    backbone_weights: str | None = None

    @property
    def strides(self) -> list[int]:
        """Strides of the neck levels P3..P``max_level``."""
        return [2**level for level in range(3, self.max_level + 1)]


def check_config(cfg: SmNasConfig) -> None:
    """``ValueError`` naming the option for a setting the builder cannot honour."""
    if cfg.neck not in NECKS:
        raise ValueError(f"model.options.neck: {cfg.neck!r}; valid: {', '.join(NECKS)}")
    if cfg.max_level not in MAX_LEVELS:
        raise ValueError(f"model.options.max_level: {cfg.max_level}; valid: {list(MAX_LEVELS)} "
                         "(levels P3..P5, P3..P6, P3..P7)")
    if cfg.neck == "fpn" and cfg.fpn_repeats != 1:
        raise ValueError(f"model.options.fpn_repeats: {cfg.fpn_repeats}; the fpn neck is one "
                         "top-down pass (1)")
    if cfg.neck == "bifpn" and cfg.head_width not in (None, cfg.fpn_channels):
        raise ValueError(f"model.options.head_width: {cfg.head_width}; bifpn's separable heads "
                         f"run at the neck's width ({cfg.fpn_channels}): leave it null")
    for key in ("fpn_channels", "fpn_repeats", "head_repeats"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"model.options.{key}: {getattr(cfg, key)}, expected >= 1")
    if cfg.head_width is not None and cfg.head_width < 1:
        raise ValueError(f"model.options.head_width: {cfg.head_width}, expected >= 1 or null")
    if cfg.channel_plan is not None and not is_structure(cfg.backbone):
        raise ValueError(f"model.options.channel_plan: {cfg.channel_plan!r} needs a searched "
                         f"backbone (a structure.json or one of {structure_presets()}), not "
                         f"{cfg.backbone!r}")


def build_backbone(cfg: SmNasConfig, pretrained: bool, num_extra: int) -> nn.Module:
    """The timm or searched backbone of ``cfg``: levels P3..P5 plus ``num_extra`` max-pooled
    ones (``fpn_channels`` wide)."""
    common = dict(strides=(8, 16, 32), num_extra=num_extra, extra_channels=cfg.fpn_channels,
                  conv_bias=cfg.conv_bias, padding=cfg.padding)
    if not is_structure(cfg.backbone):
        return TimmBackbone.from_config(cfg, pretrained, **common)
    if pretrained or cfg.backbone_weights:
        raise ValueError("model.pretrained: searched backbones have no pretrained weights")
    if cfg.drop_path_rate:
        raise ValueError(f"model.drop_path_rate: {cfg.drop_path_rate}; searched backbones have "
                         "no stochastic depth, set it to 0")
    structure = load_structure(resolve_structure(cfg.backbone))
    if cfg.channel_plan is not None:
        structure = apply_plan(structure, parse_plan(cfg.channel_plan, "model.options."
                                                                       "channel_plan"))
    return NasBackbone(structure, **common)


def build_smnas(cfg: SmNasConfig, num_classes: int, pretrained: bool = False) -> Detector:
    """The detector of ``cfg`` from existing parts: backbone, BiFPN / FPN / RepGFPN, heads."""
    check_config(cfg)
    extra = cfg.max_level - BACKBONE_TOP
    if cfg.neck == "bifpn":
        return efficientdet_on_backbone(build_backbone(cfg, pretrained, extra), cfg, num_classes)
    if cfg.neck == "fpn":
        backbone = build_backbone(cfg, pretrained, 0)
        neck: nn.Module = FPN(backbone.channels, cfg.fpn_channels, num_extra=extra)
    else:
        backbone = build_backbone(cfg, pretrained, extra)
        neck = RepGFPN(backbone.channels, [cfg.fpn_channels] * len(cfg.strides),
                       depth=cfg.fpn_repeats, hidden_ratio=1.0)
    width = cfg.head_width if cfg.head_width not in (None, cfg.fpn_channels) else None
    detector = assemble(cfg, backbone, neck, neck.out_channels, num_classes,
                        depth=cfg.head_repeats, width=width, norm="gn", act="silu")
    for head in (detector.class_head, detector.box_head):
        regroup_norms(head)
    return detector


def regroup_norms(module: nn.Module) -> None:
    """Every GroupNorm of ``module`` with groups of about 8 channels (``group_norm``): the
    conv heads' one-channel groups (``gcd(32, width)`` groups) cannot normalise a 1x1 map."""
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(module, name, group_norm(child.num_channels))
        else:
            regroup_norms(child)


def describe(cfg: SmNasConfig) -> str:
    """One line for ``distill info``."""
    head = "" if cfg.neck == "bifpn" else f"x{cfg.head_width or cfg.fpn_channels}"
    return (f"SM-NAS student: {cfg.backbone}, {cfg.neck} {cfg.fpn_channels}x{cfg.fpn_repeats} "
            f"P3-P{cfg.max_level}, head {cfg.head_repeats}{head}, {cfg.image_size}px (backbone, "
            "neck, levels, head as model.backbone / model.options)")


DEFAULT = SmNasConfig("smnas")  # efficientdet_dm3's parts: tinynet_e, BiFPN 24x1, head x2


# the recipe's model.backbone / model.options set its parts
register_preset("smnas", build_smnas, DEFAULT, describe(DEFAULT))
