"""Basic convolution blocks shared by the neck and the heads."""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the EfficientDet settings (eps 1e-3, PyTorch momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBnAct(nn.Module):
    """Convolution, optional BatchNorm, optional SiLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=bias
        )
        self.bn = batch_norm(out_channels) if norm else nn.Identity()
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConv(nn.Module):
    """Depthwise KxK conv (no bias) + pointwise 1x1 conv, optional BatchNorm and SiLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        norm: bool = True,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=False,
        )
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.bn = batch_norm(out_channels) if norm else nn.Identity()
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_pw(self.conv_dw(x))))


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """Max-pool with kernel 3, stride 2, padding 1 (output size ceil(H / 2))."""
    return nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)
