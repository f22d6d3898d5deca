"""Backbone built from a searched structure: stem + residual stages, features at 8/16/32."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.backbone import extra_levels, pick_indices
from distill.models.layers import downsample2x

from .space import ConvSpec, Structure, output_strides, shortcut_conv, unit_convs


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


class NasBackbone(nn.Module):
    """The structure's blocks; returns the last feature at each of ``strides`` plus
    ``num_extra`` max-pooled levels (a 1x1 conv + BN first when channels differ), like
    ``distill.models.backbone.TimmBackbone``."""

    def __init__(
        self,
        structure: Structure,
        strides: tuple[int, ...] = (8, 16, 32),
        num_extra: int = 2,
        extra_channels: int = 64,
        padding: str = "",
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.structure = structure
        self.blocks = build_blocks(structure)
        self.indices = pick_indices(output_strides(structure), strides)
        if self.indices[-1] != len(structure) - 1:
            # blocks after the last tapped level would be computed for nothing
            self.blocks = self.blocks[: self.indices[-1] + 1]
        channels = [structure[i].out_ch for i in self.indices]
        self.padding = padding
        self.extra, extra = extra_levels(channels[-1], num_extra, extra_channels, conv_bias)
        channels += extra
        self.channels: list[int] = channels
        self.strides: list[int] = list(strides) + [
            strides[-1] * 2 ** (i + 1) for i in range(num_extra)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.indices:
                out.append(x)
        for conv in self.extra:
            out.append(downsample2x(conv(out[-1]), self.padding))
        return out
