"""GroupNorm + Weight Standardization (``model.options.norm: gn_ws``) for from-scratch students.

SM-NAS trains its detectors from scratch with GroupNorm and Weight Standardization instead of
BatchNorm + ImageNet weights: neither depends on the batch, so small batches (down to one
image, where a 1x1 P7 map leaves BatchNorm a single value per channel) train the same.

``convert_gn_ws(model)`` does it after the model is built:

- in the neck, the heads' stems and the extra levels (every ``ConvBnAct`` and normalised
  ``SeparableConv``), the conv before each BatchNorm becomes timm's ``StdConv2d`` and the
  BatchNorm a ``GroupNorm``; the heads build their tower convs standardised themselves
  (``Head`` / ``ConvHead`` with ``norm="gn_ws"``); predictors stay plain convs;
- every other BatchNorm (the backbone's: timm's ``BatchNormAct2d`` keeps its activation as
  ``GroupNormAct``) becomes GroupNorm. The backbone's convs are not standardised: timm builds
  them itself (``create_conv2d``; EfficientNet / TinyNet take a ``norm_layer`` but no conv
  layer) and the searched backbones keep plain convs too, so the backbone gets GroupNorm only.
- convs without a norm after them (RetinaNet's FPN) stay as they are: standardised weights with
  no norm behind them would scale the activations by the fan-in.

The stride-1 odd-kernel convs converted here pad symmetrically in either padding mode, so
``StdConv2d`` serves both (``StdConv2dSame`` would only matter for strided convs).
"""

from __future__ import annotations

import torch
from timm.layers import BatchNormAct2d, GroupNormAct, StdConv2d
from torch import nn

from .layers import ConvBnAct, SeparableConv, batch_norm

GN_GROUP_SIZE = 8  # channels per group, at most 32 groups (GroupNorm's default count)


def gn_groups(channels: int) -> int:
    """Groups for ``channels``: about 8 channels each, at most 32, dividing ``channels``."""
    groups = min(32, max(1, channels // GN_GROUP_SIZE))
    while channels % groups:
        groups -= 1
    return groups


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``gn_groups(channels)`` groups."""
    return nn.GroupNorm(gn_groups(channels), channels)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The norm after a conv for ``model.options.norm`` ``kind``: EfficientDet's BatchNorm
    (``bn``) or GroupNorm (``gn_ws``)."""
    return group_norm(channels) if kind == "gn_ws" else batch_norm(channels)


def std_conv(conv: nn.Conv2d) -> StdConv2d:
    """A weight-standardised copy of ``conv`` (same shape, padding, groups; weights copied)."""
    new = StdConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _group_norm_like(bn: nn.BatchNorm2d) -> nn.Module:
    """A GroupNorm for the channels of ``bn``; timm's norm+act keeps its activation and drop."""
    channels = bn.num_features
    kwargs = dict(device=bn.weight.device) if bn.weight is not None else {}
    if isinstance(bn, BatchNormAct2d):
        new = GroupNormAct(channels, gn_groups(channels), eps=bn.eps, apply_act=False, **kwargs)
        new.act, new.drop = bn.act, bn.drop
        return new
    return nn.GroupNorm(gn_groups(channels), channels, eps=bn.eps, **kwargs)


def convert_gn_ws(model: nn.Module) -> nn.Module:
    """Switch ``model`` to GroupNorm + Weight Standardization in place (see the module doc)."""
    for module in model.modules():
        if isinstance(module, ConvBnAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = std_conv(module.conv)
        elif isinstance(module, SeparableConv) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv_pw = std_conv(module.conv_pw)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, _group_norm_like(child))
    return model
