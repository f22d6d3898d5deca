"""A DAMO-YOLO-style heavy-neck teacher: timm backbone, RepGFPN-like neck, light shared head.

"Large neck, small head" (Xu et al. 2022, DAMO-YOLO). What follows DAMO-YOLO's RepGFPN
(``GiraffeNeckV2``):

- fusion nodes are CSP stages: two 1x1 branches, one kept, one through ``round(3 * depth)``
  reversed basic blocks (a RepConv, i.e. parallel 3x3 conv-BN + 1x1 conv-BN summed before SiLU,
  to a ``hidden_ratio`` width, then a 3x3 conv-BN-SiLU, plus a residual), all block outputs
  concatenated and fused by a 1x1 conv;
- queen fusion: a top-down node combines its own level, the top-down node above (nearest
  upsampled) and the level below (stride-2 3x3 conv); a bottom-up node combines the top-down
  node of its level, the bottom-up node below and the top-down node below (both by stride-2
  convs). For P3..P5 this is exactly GiraffeNeckV2's wiring; more levels follow the same rule;
- per-level widths (``neck_widths``) and depth multiplier (``neck_depth``).

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

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.detector import Detector
from distill.models.layers import ConvBnAct

from .common import TeacherConfig, assemble, timm_backbone


@dataclass
class HeavyNeckConfig(TeacherConfig):
    """Heavy-neck settings; ``neck_widths`` has one entry per level ``min_level..max_level``."""

    neck_widths: tuple[int, ...] = (128, 256, 512)  # DAMO-YOLO-L's neck widths and depth
    neck_depth: float = 2.0  # blocks per fusion stage: round(3 * neck_depth), at least 1
    hidden_ratio: float = 1.0  # RepConv width in a block, as a fraction of the block's width
    head_width: int = 128
    head_convs: int = 1


class RepConv(nn.Module):
    """Parallel 3x3 conv-BN and 1x1 conv-BN, summed, then SiLU (RepVGG's training form)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.dense = ConvBnAct(in_channels, out_channels, 3)
        self.point = ConvBnAct(in_channels, out_channels, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x) + self.point(x))


class RepBlock(nn.Module):
    """DAMO-YOLO's reversed basic block: RepConv to the hidden width, 3x3 conv back, residual."""

    def __init__(self, channels: int, hidden_ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(channels * hidden_ratio))
        self.rep = RepConv(channels, hidden)
        self.conv = ConvBnAct(hidden, channels, 3, act=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.rep(x))


class CSPStage(nn.Module):
    """CSP fusion: 1x1 split, ``depth`` RepBlocks on one half, concat of all, 1x1 fuse."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, hidden_ratio: float):
        super().__init__()
        kept = out_channels // 2
        mid = out_channels - kept
        self.short = ConvBnAct(in_channels, kept, 1, act=True)
        self.main = ConvBnAct(in_channels, mid, 1, act=True)
        self.blocks = nn.ModuleList(RepBlock(mid, hidden_ratio) for _ in range(depth))
        self.fuse = ConvBnAct(kept + mid * depth, out_channels, 1, act=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        outs = [self.short(x)]
        for block in self.blocks:
            y = block(y)
            outs.append(y)
        return self.fuse(torch.cat(outs, dim=1))


def _down(channels: int) -> ConvBnAct:
    return ConvBnAct(channels, channels, 3, stride=2, act=True)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class RepGFPN(nn.Module):
    """RepGFPN-like neck (see the module docstring); outputs ``widths`` channels per level."""

    def __init__(
        self, in_channels: list[int], widths: list[int], depth: int, hidden_ratio: float
    ) -> None:
        super().__init__()
        n = len(widths)
        if len(in_channels) != n or n < 2:
            raise ValueError(f"need one neck width per level (>= 2 levels), got {widths}")
        w = list(widths)
        self.lateral = nn.ModuleList(ConvBnAct(c, o, 1, act=True) for c, o in zip(in_channels, w))
        # top-down node i: [lateral i, down(lateral i-1), up(top-down i+1)]
        self.td_down = nn.ModuleList(_down(w[i - 1]) for i in range(1, n))
        self.td_merge = nn.ModuleList(
            CSPStage(
                w[i] + (w[i - 1] if i > 0 else 0) + (w[i + 1] if i < n - 1 else 0),
                w[i],
                depth,
                hidden_ratio,
            )
            for i in range(n)
        )
        # bottom-up node i >= 1: [top-down i, down(bottom-up i-1), down(top-down i-1) if i >= 2]
        self.bu_down = nn.ModuleList(_down(w[i - 1]) for i in range(1, n))
        self.bu_queen = nn.ModuleList(_down(w[i - 1]) for i in range(2, n))
        self.bu_merge = nn.ModuleList(
            CSPStage(w[i] + w[i - 1] * (2 if i >= 2 else 1), w[i], depth, hidden_ratio)
            for i in range(1, n)
        )
        self.out_channels = w

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(x) for conv, x in zip(self.lateral, feats)]
        n = len(lat)
        td: list[torch.Tensor] = [lat[0]] * n  # placeholders, filled from the top down
        for i in range(n - 1, -1, -1):
            parts = [lat[i]]
            if i > 0:
                parts.append(self.td_down[i - 1](lat[i - 1]))
            if i < n - 1:
                parts.append(_up(td[i + 1], lat[i]))
            td[i] = self.td_merge[i](torch.cat(parts, dim=1))
        outs = [td[0]]
        for i in range(1, n):
            parts = [td[i], self.bu_down[i - 1](outs[-1])]
            if i >= 2:
                parts.append(self.bu_queen[i - 2](td[i - 1]))
            outs.append(self.bu_merge[i - 1](torch.cat(parts, dim=1)))
        return outs


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
