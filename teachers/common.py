"""Parts shared by the teacher families: config base, timm backbone, conv heads, registration."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.models.anchors import AnchorGenerator
from distill.models.backbone import TimmBackbone
from distill.models.detector import Detector
from distill.models.layers import ConvBnAct, conv2d
from distill.models.light import LightConv
from distill.models.norms import group_norm
from distill.models.options import (
    DetectorOptions,
    check_light_block,
    light_layers,
    light_positions,
)
from distill.models.registry import build_configured, register_model, replace_config

# RetinaNet's aspect ratios 1:2, 1:1, 2:1 at equal area, as (width, height) multipliers
EQUAL_AREA_ASPECTS: tuple[tuple[float, float], ...] = (
    (1.0, 1.0),
    (math.sqrt(2.0), math.sqrt(0.5)),
    (math.sqrt(0.5), math.sqrt(2.0)),
)


@dataclass
class TeacherConfig(DetectorOptions):
    """Settings every teacher family has: input size, timm backbone, levels and anchors, and
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

    def replace(self, **overrides: Any) -> TeacherConfig:
        """Copy with ``overrides`` applied; unknown keys raise ``ValueError``."""
        return replace_config(self, **overrides)

    @property
    def strides(self) -> list[int]:
        """Strides of the neck levels, ``2**min_level`` .. ``2**max_level``."""
        return [2**level for level in range(self.min_level, self.max_level + 1)]


def timm_backbone(cfg: TeacherConfig, pretrained: bool, strides: list[int]) -> TimmBackbone:
    """The timm ``features_only`` backbone of ``cfg`` returning the maps at ``strides``."""
    kwargs: dict[str, Any] = {}
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    return TimmBackbone(
        cfg.backbone,
        pretrained=pretrained,
        weights_file=Path(cfg.backbone_weights) if cfg.backbone_weights else None,
        strides=tuple(strides),
        num_extra=0,
        **kwargs,
    )


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "gn_ws":
        return group_norm(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"head norm: unknown {kind!r}; allowed: none, gn, gn_ws, bn")


def _act(kind: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "silu": nn.SiLU}
    if kind not in acts:
        raise ValueError(f"activation: unknown {kind!r}; allowed: {', '.join(acts)}")
    return acts[kind](inplace=True)


def conv_tower(
    channels: int, depth: int, norm: str | None, act: str, light_block: str | None = None
) -> nn.Sequential:
    """``depth`` times 3x3 conv (bias only without norm) + norm + activation; with
    ``light_block`` each conv is a ``LightConv`` of that kind; ``norm="gn_ws"``: GroupNorm after
    weight-standardised convs."""
    bias, std = norm in (None, "none"), norm == "gn_ws"
    layers: list[nn.Module] = []
    for _ in range(depth):
        if light_block:
            conv = LightConv(channels, light_block, separable_head=False, bias=bias,
                             standardize=std)
        else:
            conv = conv2d(channels, channels, 3, padding=1, bias=bias, standardize=std)
        layers += [conv, _norm(norm, channels), _act(act)]
    return nn.Sequential(*layers)


class ConvHead(nn.Module):
    """A class or box subnet shared over levels: 3x3 conv tower, then a 3x3 predictor.

    With ``width`` set, each level first gets its own 1x1 conv + BN + SiLU stem from its
    ``in_channels`` to ``width`` (levels of different widths, as RepGFPN gives); without, every
    level must have the same channels (RetinaNet). ``light``: indices of the levels that get
    their own ``LightConv(light_block)`` layers (with their own norms) for the first
    ``light_depth`` tower layers (None: all), the shared tower's layers after them; the
    predictor stays shared. Tower and predictor convs are initialised
    N(0, 0.01) with zero bias; the predictor's bias is ``-log((1 - p) / p)`` for a
    ``prior_prob`` p (the class subnet). The output is ``[B, sum_l H_l W_l anchors,
    num_outputs]`` (levels, row-major locations, anchors), as ``Detector`` expects.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_outputs: int,
        num_anchors: int,
        depth: int,
        width: int | None = None,
        norm: str | None = None,
        act: str = "relu",
        prior_prob: float | None = None,
        light: Sequence[int] = (),
        light_block: str = "grouped",
        light_depth: int | None = None,
    ) -> None:
        super().__init__()
        if width is None and len(set(in_channels)) != 1:
            raise ValueError(f"levels of different channels {in_channels} need a head width")
        self.num_outputs = num_outputs
        self.stems = nn.ModuleList(
            ConvBnAct(c, width, 1, act=True) for c in (in_channels if width else [])
        )
        width = width or in_channels[0]
        self.width = width  # channels of the tower and of the predictor's input
        self.tower = conv_tower(width, depth, norm, act)
        self.predictor = nn.Conv2d(width, num_anchors * num_outputs, 3, padding=1)
        # built after the shared layers, so a head without light levels draws the same init
        self.light = nn.ModuleDict(
            {str(level): conv_tower(width, light_layers(light_depth, depth), norm, act,
                                    light_block) for level in light}
        )
        for m in [*self.tower.modules(), self.predictor, *self.light.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if prior_prob is not None:
            nn.init.constant_(self.predictor.bias, -math.log((1 - prior_prob) / prior_prob))

    @property
    def num_layers(self) -> int:
        """Conv layers of the tower (``run_tower`` runs a range of them; stems come before)."""
        return len(self.tower) // 3

    def run_tower(self, x: torch.Tensor, level: int, start: int = 0) -> torch.Tensor:
        """The level's stem (when ``start`` is 0) and tower layers ``start..``."""
        if self.stems and start == 0:
            x = self.stems[level](x)
        light = self.light[str(level)] if str(level) in self.light else self.tower[:0]
        return self.tower[max(3 * start, len(light)):](light[3 * start:](x))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The predictor on one level's tower output: ``[B, H * W * anchors, num_outputs]``."""
        x = self.predictor(x)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.num_outputs)

    def forward(self, feats: list[torch.Tensor], return_hidden: bool = False):
        """``[B, sum_l H_l W_l anchors, num_outputs]``; with ``return_hidden`` also the tower
        outputs per level (CrossKD's taps)."""
        hidden = [self.run_tower(x, level) for level, x in enumerate(feats)]
        out = torch.cat([self.project(h) for h in hidden], dim=1)
        return (out, hidden) if return_hidden else out


def assemble(
    cfg: TeacherConfig,
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
    return Detector(
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


Builder = Callable[[Any, int, bool], Detector]


def build_teacher(
    builder: Builder,
    cfg: TeacherConfig,
    num_classes: int,
    image_size: int | None = None,
    pretrained: bool = False,
    **overrides: Any,
) -> Detector:
    """Apply ``image_size`` and ``overrides`` to ``cfg``, build it with ``builder``."""
    return build_configured(builder, cfg, num_classes, image_size, pretrained, **overrides)


def register_teachers(
    presets: dict[str, TeacherConfig],
    builder: Builder,
    describe: Callable[[TeacherConfig], str],
    descriptions: dict[str, str] | None = None,
) -> None:
    """Register every config of ``presets`` under its name.

    The ``distill info`` line is ``descriptions[name]`` where given, else ``describe(cfg)``.
    """
    descriptions = descriptions or {}
    for name, cfg in presets.items():
        line = descriptions.get(name) or describe(cfg)
        register_model(name, line)(functools.partial(build_teacher, builder, cfg))
