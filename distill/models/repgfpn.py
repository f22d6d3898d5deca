"""Efficient RepGFPN, DAMO-YOLO's neck (Xu et al. 2022, ``GiraffeNeckV2``).


- fusion nodes are CSP stages: two 1x1 branches, one kept, one through ``round(3 * depth)``
  reversed basic blocks (a RepConv, i.e. parallel 3x3 conv-BN + 1x1 conv-BN summed before SiLU,
  to a ``hidden_ratio`` width, then a 3x3 conv-BN-SiLU, plus a residual), all block outputs
  concatenated and fused by a 1x1 conv;
- queen fusion: a top-down node combines its own level, the top-down node above (nearest
  upsampled) and the level below (stride-2 3x3 conv); a bottom-up node combines the top-down
  node of its level, the bottom-up node below and the top-down node below (both by stride-2
  convs). For P3..P5 this is exactly GiraffeNeckV2's wiring; more levels follow the same rule;
- per-level widths (``neck_widths``) and depth multiplier (``neck_depth``).


Simplified: RepConv branches are kept unfused (no re-parameterisation step yet); no SPP.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBnAct


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
    """CSP fusion: two 1x1 branches (``pointwise``), ``depth`` blocks (``block(width)``) on
    the second, the kept branch and every block output concatenated, 1x1 fuse. DAMO-YOLO's
    ``GiraffeNeck`` builds its stages on this with its own blocks and convs."""

    def __init__(self, in_channels: int, out_channels: int, depth: int,
                 block: Callable[[int], nn.Module],
                 pointwise: Callable[[int, int], nn.Module] | None = None) -> None:
        super().__init__()
        pointwise = pointwise or (lambda c_in, c_out: ConvBnAct(c_in, c_out, 1, act=True))
        kept = out_channels // 2
        mid = out_channels - kept
        self.short = pointwise(in_channels, kept)
        self.main = pointwise(in_channels, mid)
        self.blocks = nn.ModuleList(block(mid) for _ in range(depth))
        self.fuse = pointwise(kept + mid * depth, out_channels)

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
        block = partial(RepBlock, hidden_ratio=hidden_ratio)
        self.lateral = nn.ModuleList(ConvBnAct(c, o, 1, act=True) for c, o in zip(in_channels, w))
        # top-down node i: [lateral i, down(lateral i-1), up(top-down i+1)]
        self.td_down = nn.ModuleList(_down(w[i - 1]) for i in range(1, n))
        self.td_merge = nn.ModuleList(
            CSPStage(
                w[i] + (w[i - 1] if i > 0 else 0) + (w[i + 1] if i < n - 1 else 0),
                w[i],
                depth,
                block,
            )
            for i in range(n)
        )
        # bottom-up node i >= 1: [top-down i, down(bottom-up i-1), down(top-down i-1) if i >= 2]
        self.bu_down = nn.ModuleList(_down(w[i - 1]) for i in range(1, n))
        self.bu_queen = nn.ModuleList(_down(w[i - 1]) for i in range(2, n))
        self.bu_merge = nn.ModuleList(
            CSPStage(w[i] + w[i - 1] * (2 if i >= 2 else 1), w[i], depth, block)
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
