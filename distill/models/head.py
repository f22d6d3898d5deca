"""Class and box heads: separable convs shared over levels, one BatchNorm per level and repeat."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import SeparableConv
from .light import LightConv
from .norms import norm_layer
from .options import light_layers


class Head(nn.Module):
    """EfficientDet prediction head producing ``num_anchors * num_outputs`` channels per level.

    ``light``: indices of the levels whose tower convs are replaced by their own
    ``LightConv(light_block)`` (``model.options.light_levels``), the first ``light_depth`` of
    them (None: all; the rest stay shared); they keep their per-level norms and share the
    predictor. ``norm``: ``bn`` or ``gn_ws`` (GroupNorm per level and repeat, the
    tower's pointwise convs weight-standardised).
    """

    def __init__(
        self,
        channels: int,
        num_outputs: int,
        num_anchors: int,
        repeats: int,
        num_levels: int,
        prior_prob: float | None = None,
        conv_bias: bool = True,
        light: Sequence[int] = (),
        light_block: str = "grouped",
        light_depth: int | None = None,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.width = channels  # channels of the tower and of the predictor's input
        std = norm == "gn_ws"
        self.conv_rep = nn.ModuleList(
            SeparableConv(channels, channels, 3, bias=conv_bias, norm=False, standardize=std)
            for _ in range(repeats)
        )
        self.bn_rep = nn.ModuleList(
            nn.ModuleList(norm_layer(norm, channels) for _ in range(num_levels))
            for _ in range(repeats)
        )
        self.act = nn.SiLU(inplace=True)
        self.predict = SeparableConv(channels, num_outputs * num_anchors, 3, bias=True, norm=False)
        # built after the shared convs, so a head without light levels draws the same init
        self.light = nn.ModuleDict({
            str(level): nn.ModuleList(
                LightConv(channels, light_block, separable_head=True, bias=conv_bias,
                          standardize=std)
                for _ in range(light_layers(light_depth, repeats))
            )
            for level in light
        })
        self.reset_parameters(prior_prob)

    def reset_parameters(self, prior_prob: float | None = None) -> None:
        """Variance-scaling init of the convs; prediction bias ``-log((1 - p) / p)`` or zero."""
        for block in [*self.conv_rep, self.predict, *self.light.values()]:
            for layer in block.modules():
                if not isinstance(layer, nn.Conv2d):
                    continue
                fan_in = layer.weight[0].numel()
                nn.init.normal_(layer.weight, std=math.sqrt(1.0 / max(1.0, fan_in)))
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        if prior_prob is not None:
            nn.init.constant_(self.predict.conv_pw.bias, -math.log((1 - prior_prob) / prior_prob))

    @property
    def num_layers(self) -> int:
        """Conv layers before the predictor (``run_tower`` runs a range of them)."""
        return len(self.conv_rep)

    def run_tower(self, x: torch.Tensor, level: int, start: int = 0) -> torch.Tensor:
        """Layers ``start..`` of the conv tower on one level's map (before the predictor);
        a light level runs its own light convs (then the shared ones past ``light_depth``)."""
        light = self.light[str(level)] if str(level) in self.light else ()
        for i in range(start, len(self.conv_rep)):
            conv = light[i] if i < len(light) else self.conv_rep[i]
            x = self.act(self.bn_rep[i][level](conv(x)))
        return x

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The predictor on one level's tower output: ``[B, H * W * anchors, num_outputs]``."""
        x = self.predict(x)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.num_outputs)

    def forward(self, feats: list[torch.Tensor], return_hidden: bool = False):
        """Return ``[B, sum_l H_l * W_l * anchors, num_outputs]`` (level, row-major, anchor);
        with ``return_hidden`` also the tower outputs per level (CrossKD's taps)."""
        hidden = [self.run_tower(x, level) for level, x in enumerate(feats)]
        out = torch.cat([self.project(h) for h in hidden], dim=1)
        return (out, hidden) if return_hidden else out
