"""Basic convolution blocks shared by the neck and the heads."""

from __future__ import annotations

import math

import torch
from timm.layers import StdConv2d
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# "" : PyTorch-style symmetric padding; "same": TensorFlow SAME padding (effdet's tf_ models).
# The neck's and heads' convs have stride 1 and odd kernels, for which SAME is the symmetric
# ``k // 2`` padding, so only the stride-2 max-pools differ between the two modes.
PADDING_MODES = ("", "same")


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the EfficientDet settings (eps 1e-3, PyTorch momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def conv2d(*args, standardize: bool = False, **kwargs) -> nn.Conv2d:
    """``nn.Conv2d(*args, **kwargs)``, or timm's weight-standardised ``StdConv2d`` with
    ``standardize`` (``model.options.norm: gn_ws``)."""
    return (StdConv2d if standardize else nn.Conv2d)(*args, **kwargs)


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
    """Depthwise KxK conv (no bias) + pointwise 1x1 conv, optional BatchNorm and SiLU;
    ``standardize``: the pointwise conv is weight-standardised (a norm must follow it)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        norm: bool = True,
        act: bool = False,
        standardize: bool = False,
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
        self.conv_pw = conv2d(in_channels, out_channels, 1, bias=bias, standardize=standardize)
        self.bn = batch_norm(out_channels) if norm else nn.Identity()
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_pw(self.conv_dw(x))))


def check_padding(padding: str) -> str:
    """``padding`` if it is one of ``PADDING_MODES``; ``ValueError`` otherwise."""
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding {padding!r}, expected one of {PADDING_MODES}")
    return padding


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME padding (before, after) of one dimension: the extra pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def downsample2x(x: torch.Tensor, padding: str = "") -> torch.Tensor:
    """Max-pool with kernel 3, stride 2 (output size ceil(H / 2)).

    ``padding=""`` pads 1 pixel on every side; ``"same"`` pads like TensorFlow (and timm's
    ``MaxPool2dSame``): ``-inf`` only after the input when H is even, 1 on both sides when odd.
    """
    if check_padding(padding) == "same":
        top, bottom = _same_pad(x.shape[-2], 3, 2)
        left, right = _same_pad(x.shape[-1], 3, 2)
        x = nn.functional.pad(x, (left, right, top, bottom), value=-math.inf)
        return nn.functional.max_pool2d(x, kernel_size=3, stride=2)
    return nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)
