"""A searched structure as modules: one ``nn.Sequential`` of residual units per block.

The score (noise through the blocks) and the latency table (one conv layer timed) build these;
``students.nas.backbone.NasBackbone`` puts them under a detector's neck.
"""

from __future__ import annotations

import torch
from torch import nn

from .space import ConvSpec, Structure, shortcut_conv, unit_convs


class StridedPointwise(nn.Conv2d):
    """A 1x1 conv of stride ``step`` computed as subsampling, then a stride-1 1x1 conv: the same
    weights, keys and numbers. torch 2.14's CPU backward of a strided 1x1 conv in channels_last
    with few input channels crashes the process (double free; e.g. 8 -> 16 channels on a 64x64
    map, maenas_dm3's first shortcut); this form does not."""

    def __init__(self, in_ch: int, out_ch: int, step: int) -> None:
        super().__init__(in_ch, out_ch, 1, bias=False)
        self.step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, :, :: self.step, :: self.step])


def conv_layer(spec: ConvSpec, norm: bool = True) -> nn.Sequential:
    """``spec`` as Conv2d (no bias) + BatchNorm (``norm``) + ReLU (``spec.act``); a strided
    1x1 conv is a ``StridedPointwise``."""
    if spec.kernel == 1 and spec.stride > 1:
        conv: nn.Module = StridedPointwise(spec.in_ch, spec.out_ch, spec.stride)
    else:
        conv = nn.Conv2d(spec.in_ch, spec.out_ch, spec.kernel, spec.stride,
                         padding=spec.kernel // 2, bias=False)
    layers: list[nn.Module] = [conv]
    if norm:
        layers.append(nn.BatchNorm2d(spec.out_ch))
    if spec.act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualUnit(nn.Module):
    """ReLU(main(x) + shortcut(x)); the stem is a unit without a shortcut (``residual=False``)."""

    def __init__(self, convs: list[ConvSpec], shortcut: ConvSpec | None, residual: bool = True,
                 norm: bool = True) -> None:
        super().__init__()
        self.main = nn.Sequential(*(conv_layer(spec, norm) for spec in convs))
        self.residual = residual
        self.shortcut = conv_layer(shortcut, norm) if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.main(x)
        return torch.relu(self.main(x) + self.shortcut(x))


def build_blocks(structure: Structure, norm: bool = True) -> nn.ModuleList:
    """One ``nn.Sequential`` of ``ResidualUnit`` per block of ``structure``."""
    blocks = nn.ModuleList()
    for i, block in enumerate(structure):
        units = [ResidualUnit(unit_convs(block, u), shortcut_conv(block, u), residual=i > 0,
                              norm=norm) for u in range(block.depth)]
        blocks.append(nn.Sequential(*units))
    return blocks
