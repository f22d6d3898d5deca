"""Backbone built from a searched structure: stem + residual stages, features at 8/16/32."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.backbone import extra_levels, pick_indices
from distill.models.layers import downsample2x
from distill.search.blocks import build_blocks
from distill.search.space import Structure, output_strides


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
