"""Lightweight head blocks for the pyramid levels named in ``model.options.light_levels``.

Light-Weight RetinaNet (Li & Ren 2019) cuts FLOPs only where they are: the head convs of the
finest level (P3) hold most of a RetinaNet's head FLOPs, so those convs alone become lighter
blocks while every other layer stays as it was. Heads share their tower convs over levels; a
light level gets its own (unshared) blocks, so the other levels keep theirs unchanged.

One tower layer (``channels -> channels``, 3x3) becomes, by the head's conv type:

========================  ==============================  ====================================
head conv                 ``separable``                   ``grouped``
========================  ==============================  ====================================
dense 3x3 (``ConvHead``)  depthwise 3x3 + pointwise 1x1   3x3 conv in ``G`` groups + shuffle
separable (``Head``)      (not allowed: already so)       depthwise 3x3 + pointwise in ``G``
                                                          groups + shuffle
========================  ==============================  ====================================

``G = gcd(channels, 8)``. A channel shuffle after a grouped conv lets the next layer's groups
see every group of this one (ShuffleNet). Per output pixel a dense 3x3 layer costs ``9 C^2``
multiply-adds, ``separable`` ``9 C + C^2``, grouped ``9 C^2 / G`` (dense head) or
``9 C + C^2 / G`` (separable head).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import conv2d

LIGHT_GROUPS = 8


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet's shuffle); no size is read
    from ``x``, so traced and exported graphs keep dynamic batch and map sizes."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class LightConv(nn.Module):
    """A light stand-in for one 3x3 head conv (see the module docstring for the variants).

    ``separable_head``: the conv it replaces is depthwise-separable already (EfficientDet's head);
    ``bias`` goes on the last conv (the one a norm follows), which ``standardize`` makes a
    weight-standardised ``StdConv2d`` (``norm: gn_ws``).
    """

    def __init__(
        self,
        channels: int,
        kind: str,
        separable_head: bool,
        bias: bool = True,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("separable", "grouped") or (separable_head and kind == "separable"):
            raise ValueError(f"no light block {kind!r} for a "
                             f"{'separable' if separable_head else 'dense'} head")
        depthwise = separable_head or kind == "separable"
        self.groups = 1 if kind == "separable" else math.gcd(channels, LIGHT_GROUPS)
        self.conv_dw = (
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
            if depthwise else nn.Identity()
        )
        kernel = 1 if depthwise else 3
        self.conv = conv2d(channels, channels, kernel, padding=kernel // 2, groups=self.groups,
                           bias=bias, standardize=standardize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.conv_dw(x))
        return channel_shuffle(x, self.groups) if self.groups > 1 else x
