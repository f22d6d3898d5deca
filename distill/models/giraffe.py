"""DAMO-YOLO's Efficient RepGFPN as its code builds it (``GiraffeNeckV2``), for three levels.

Unlike ``repgfpn.RepGFPN`` (the heavy-neck teacher's generalisation to any number of levels,
with 1x1 laterals to the neck widths first), this is DAMO's exact layout, so the published
models' parameters and FLOPs can be reproduced: with backbone maps ``c3, c4, c5`` (strides 8,
16, 32, widths ``in_channels``) and outputs ``out_channels``,

- top-down: ``n5 = CSP([c5, down(c4)])`` at ``in_channels[2]`` wide, ``n4 = CSP([c4,
  down(c3), up(n5)])`` at ``in_channels[1]``, ``p3 = CSP([c3, up(n4)])`` at ``out_channels[0]``;
- bottom-up: ``p4 = CSP([n4, down(p3)])``, ``p5 = CSP([n5, down(n4), down(p4)])``;

``down`` a stride-2 3x3 conv-BN-act, CSP stages of ``round(3 * depth)`` reversed basic
blocks (RepConv 3x3 to ``hidden_ratio`` x the width, 3x3 conv-BN-act back, residual), the
activation ``act``. RepConvs are in their training form (3x3 + 1x1 branches);
``reparameterize`` fuses them. With ``depthwise`` (DAMO's nano models) the stride-2 convs
are depthwise 3x3 + pointwise 1x1 (each with BN and act) and the blocks mobile inverted
residuals (``MobileBlock``, expansion 3, 5x5 depthwise; ``hidden_ratio`` unused), as DAMO's
code builds them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .repgfpn import CSPStage

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "identity": nn.Identity}


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (relu, silu, identity)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1,
                 act: str = "relu") -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch), activation(act))


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor`` (at least ``divisor``, never 10% down)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileBlock(nn.Module):
    """Inverted residual: 1x1 expand (BN, act), 5x5 depthwise (BN, act), 1x1 project (BN);
    the input added back when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: float, act: str) -> None:
        super().__init__()
        hidden = make_divisible(math.ceil(out_ch * expansion))
        self.conv = nn.Sequential(
            ConvBNAct(in_ch, hidden, 1, act=act),
            nn.Conv2d(hidden, hidden, 5, stride, 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), activation(act),
            nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def down_conv(channels: int, act: str, depthwise: bool = False) -> nn.Module:
    """Stride-2 3x3 conv-BN-act (depthwise 3x3 + pointwise 1x1 with ``depthwise``)."""
    if not depthwise:
        return ConvBNAct(channels, channels, 3, 2, act)
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 2, 1, groups=channels, bias=False),
        nn.BatchNorm2d(channels), activation(act), ConvBNAct(channels, channels, 1, act=act))


class RepConv(nn.Module):
    """RepVGG-style 3x3: 3x3 conv-BN + 1x1 conv-BN, summed, then ``act``; ``fuse`` turns it
    into one biased 3x3 conv with the same outputs (inference)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, act: str = "relu") -> None:
        super().__init__()
        self.dense = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                                   nn.BatchNorm2d(out_ch))
        self.point = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False),
                                   nn.BatchNorm2d(out_ch))
        self.fused: nn.Conv2d | None = None
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        return self.act(self.dense(x) + self.point(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace the two branches by the equivalent 3x3 conv (BN statistics folded in)."""
        kernel, bias = 0.0, 0.0
        for branch in (self.dense, self.point):
            conv, bn = branch
            scale = bn.weight / (bn.running_var + bn.eps).sqrt()
            weight = conv.weight if conv.kernel_size == (3, 3) else F.pad(conv.weight, [1] * 4)
            kernel = kernel + weight * scale[:, None, None, None]
            bias = bias + bn.bias - bn.running_mean * scale
        conv = self.dense[0]
        self.fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1, bias=True)
        self.fused.weight.copy_(kernel)
        self.fused.bias.copy_(bias)
        del self.dense, self.point


def reparameterize(module: nn.Module) -> nn.Module:
    """Fuse every ``RepConv`` of ``module`` (eval-mode statistics); returns ``module``."""
    for child in module.modules():
        if isinstance(child, RepConv) and child.fused is None:
            child.fuse()
    return module


class ReverseBlock(nn.Module):
    """DAMO's ``BasicBlock_3x3_Reverse``: RepConv to the hidden width, 3x3 conv back, residual."""

    def __init__(self, channels: int, hidden_ratio: float, act: str) -> None:
        super().__init__()
        hidden = int(channels * hidden_ratio)
        self.rep = RepConv(channels, hidden, act=act)
        self.conv = ConvBNAct(hidden, channels, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.rep(x))


def csp_stage(in_ch: int, out_ch: int, depth: int, hidden_ratio: float, act: str,
              depthwise: bool = False) -> CSPStage:
    """DAMO's ``CSPStage``: ``depth`` reversed basic blocks (or, ``depthwise``, mobile blocks
    of expansion 3) between 1x1 conv-BN-act branches (``repgfpn.CSPStage``'s layout)."""
    def block(width: int) -> nn.Module:
        if depthwise:
            return MobileBlock(width, width, 1, 3.0, act)
        return ReverseBlock(width, hidden_ratio, act)

    return CSPStage(in_ch, out_ch, depth, block,
                    lambda c_in, c_out: ConvBNAct(c_in, c_out, 1, act=act))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class GiraffeNeck(nn.Module):
    """``GiraffeNeckV2`` (see the module docstring): three maps in, three out."""

    def __init__(self, in_channels: list[int], out_channels: list[int], depth: float = 1.0,
                 hidden_ratio: float = 1.0, act: str = "relu", depthwise: bool = False) -> None:
        super().__init__()
        if len(in_channels) != 3 or len(out_channels) != 3:
            raise ValueError(f"GiraffeNeck joins three levels (strides 8, 16, 32); got "
                             f"in_channels {in_channels}, out_channels {out_channels}")
        c3, c4, c5 = in_channels
        o3, o4, o5 = out_channels
        n = max(1, round(3 * depth))

        def stage(cin: int, cout: int) -> CSPStage:
            return csp_stage(cin, cout, n, hidden_ratio, act, depthwise)

        self.down_c4 = down_conv(c4, act, depthwise)
        self.node5 = stage(c5 + c4, c5)
        self.down_c3 = down_conv(c3, act, depthwise)
        self.node4 = stage(c3 + c4 + c5, c4)
        self.out3 = stage(c4 + c3, o3)
        self.down_p3 = down_conv(o3, act, depthwise)
        self.out4 = stage(o3 + c4, o4)
        self.down_n4 = down_conv(c4, act, depthwise)
        self.down_p4 = down_conv(o4, act, depthwise)
        self.out5 = stage(c4 + o4 + c5, o5)
        self.out_channels = list(out_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = feats
        n5 = self.node5(torch.cat([c5, self.down_c4(c4)], 1))
        n4 = self.node4(torch.cat([c4, self.down_c3(c3), _up(n5, c4)], 1))
        p3 = self.out3(torch.cat([c3, _up(n4, c3)], 1))
        p4 = self.out4(torch.cat([n4, self.down_p3(p3)], 1))
        p5 = self.out5(torch.cat([n5, self.down_n4(n4), self.down_p4(p4)], 1))
        return [p3, p4, p5]
