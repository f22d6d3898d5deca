"""ZeroHead, DAMO-YOLO's head: no tower (``stacked_convs: 0``), per level one 3x3 conv per
branch straight from the neck output: class scores ``K`` and the box distribution
``4 * (reg_max + 1)`` (GFL), the latter times a learnable per-level scale (DAMO's ``Scale``).

Weights as DAMO initialises them: normal (std 0.01) convs, the class bias at prior 0.01. The
class branch has ``K`` outputs (DAMO's configs carry one spare ``K + 1``-th channel, "legacy",
that nothing reads; left out here).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, H * W, C]`` (row-major locations)."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


class ZeroHead(nn.Module):
    """Class and box-distribution projections per level (not shared between levels)."""

    def __init__(self, in_channels: list[int], num_classes: int, reg_max: int = 16,
                 kernel_size: int = 3, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_classes, self.reg_max = int(num_classes), int(reg_max)
        pad = kernel_size // 2
        self.cls = nn.ModuleList(nn.Conv2d(c, num_classes, kernel_size, padding=pad)
                                 for c in in_channels)
        self.reg = nn.ModuleList(nn.Conv2d(c, 4 * (reg_max + 1), kernel_size, padding=pad)
                                 for c in in_channels)
        self.scales = nn.Parameter(torch.ones(len(in_channels)))
        for conv in [*self.cls, *self.reg]:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        for conv in self.cls:
            nn.init.constant_(conv.bias, -math.log((1 - prior_prob) / prior_prob))

    def project(self, branch: str, x: torch.Tensor, level: int) -> torch.Tensor:
        """One branch (``cls`` or ``reg``) at ``level``: ``[B, H * W, outputs]``."""
        if branch == "cls":
            return _flat(self.cls[level](x))
        return _flat(self.reg[level](x) * self.scales[level])

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[B, N, K]`` and distribution logits ``[B, N, 4 * (reg_max + 1)]``
        over the levels' locations (level, then row-major)."""
        cls = [self.project("cls", x, i) for i, x in enumerate(feats)]
        box = [self.project("reg", x, i) for i, x in enumerate(feats)]
        return torch.cat(cls, 1), torch.cat(box, 1)
