"""DAMO-YOLO's TinyNAS residual backbones (``TinyNAS_res``: the T and S models).

A Focus stem (space-to-depth, then a 3x3 conv-BN-act) and stages of residual ``k1kx`` blocks:
1x1 conv-BN to the bottleneck width, act, a RepConv 3x3 (stride 2 in the first block of a
downsampling stage, no activation inside), the residual (a 1x1 conv-BN when the width changes,
none at all in a stride-2 block), act. An SPP bottleneck (max-pools 5 / 9 / 13, SiLU) follows
the first block of the last stage. The searched structures are DAMO-YOLO's published ones
(``tinynas_L20_k1kx`` for T, ``tinynas_L25_k1kx`` for S), written as ``Stage`` rows; the maps
of the stages at strides 8, 16 and 32 (the last stage of each) are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.models.giraffe import ConvBNAct, RepConv, activation


@dataclass(frozen=True)
class Stage:
    """One searched stage: ``depth`` blocks ``in_ch`` -> ``out_ch`` through ``bottleneck``."""

    in_ch: int
    out_ch: int
    bottleneck: int
    stride: int
    depth: int
    kernel: int = 3


# (stem width, stages): DAMO-YOLO's tinynas_L20_k1kx.txt and tinynas_L25_k1kx.txt
TINYNAS_STRUCTURES: dict[str, tuple[int, tuple[Stage, ...]]] = {
    "tinynas_l20_k1kx": (24, (Stage(24, 64, 24, 2, 2), Stage(64, 96, 64, 2, 2),
                              Stage(96, 192, 96, 2, 2), Stage(192, 192, 152, 1, 2),
                              Stage(192, 384, 192, 2, 1))),
    "tinynas_l25_k1kx": (32, (Stage(32, 128, 24, 2, 1), Stage(128, 128, 88, 2, 5),
                              Stage(128, 256, 128, 2, 3), Stage(256, 256, 120, 1, 2),
                              Stage(256, 512, 144, 2, 1))),
}


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels to 4x the channels), then a conv-BN-act."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, act: str) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_ch * 4, out_ch, kernel, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                       x[..., 1::2, 1::2]], 1)
        return self.conv(x)


class ResBlock(nn.Module):
    """TinyNAS ``k1kx`` residual block (see the module docstring)."""

    def __init__(self, in_ch: int, out_ch: int, bottleneck: int, kernel: int, stride: int,
                 act: str) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_ch, bottleneck, 1, bias=False),
                                    nn.BatchNorm2d(bottleneck))
        self.rep = RepConv(bottleneck, out_ch, stride, act="identity")
        self.stride = stride
        self.proj = None
        if in_ch != out_ch and stride != 2:
            self.proj = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False),
                                      nn.BatchNorm2d(out_ch))
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rep(self.act(self.reduce(x)))
        if self.stride != 2:
            y = y + (self.proj(x) if self.proj is not None else x)
        return self.act(y)


class SPPBottleneck(nn.Module):
    """1x1 conv to half width, max-pools 5 / 9 / 13 concatenated, 1x1 conv back (SiLU)."""

    def __init__(self, channels: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = channels // 2
        self.reduce = ConvBNAct(channels, hidden, 1, act="silu")
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.expand = ConvBNAct(hidden * (len(kernels) + 1), channels, 1, act="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.expand(torch.cat([x] + [pool(x) for pool in self.pools], 1))


def _stage(stage: Stage, act: str, spp: bool) -> nn.Sequential:
    blocks: list[nn.Module] = []
    for i in range(stage.depth):
        in_ch, stride = (stage.in_ch, stage.stride) if i == 0 else (stage.out_ch, 1)
        blocks.append(ResBlock(in_ch, stage.out_ch, stage.bottleneck, stage.kernel, stride, act))
        if i == 0 and spp:
            blocks.append(SPPBottleneck(stage.out_ch))
    return nn.Sequential(*blocks)


class TinyNasRes(nn.Module):
    """A ``TINYNAS_STRUCTURES`` backbone; ``channels`` / ``strides`` of its three outputs."""

    def __init__(self, structure: str, act: str = "relu", spp: bool = True) -> None:
        super().__init__()
        if structure not in TINYNAS_STRUCTURES:
            raise ValueError(f"unknown TinyNAS structure {structure!r}; valid: "
                             f"{', '.join(TINYNAS_STRUCTURES)}")
        stem, stages = TINYNAS_STRUCTURES[structure]
        self.stem = Focus(3, stem, 3, act)
        self.stages = nn.ModuleList(_stage(s, act, spp and i == len(stages) - 1)
                                    for i, s in enumerate(stages))
        stride, taps = 2, {}
        for i, s in enumerate(stages):
            stride *= s.stride
            taps[stride] = i  # the last stage at each stride
        self.indices = [taps[s] for s in (8, 16, 32)]
        self.channels = [stages[i].out_ch for i in self.indices]
        self.strides = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, outs = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.indices:
                outs.append(x)
        return outs
