"""The dense conv head shared over pyramid levels (RetinaNet's subnets, the heavy-neck head)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvBnAct, conv2d
from .light import LightConv
from .norms import group_norm
from .options import light_layers


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "gn_ws":
        return group_norm(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"head norm: unknown {kind!r}; allowed: none, gn, gn_ws, bn")


def _act(kind: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "silu": nn.SiLU}
    if kind not in acts:
        raise ValueError(f"activation: unknown {kind!r}; allowed: {', '.join(acts)}")
    return acts[kind](inplace=True)


def conv_tower(
    channels: int, depth: int, norm: str | None, act: str, light_block: str | None = None
) -> nn.Sequential:
    """``depth`` times 3x3 conv (bias only without norm) + norm + activation; with
    ``light_block`` each conv is a ``LightConv`` of that kind; ``norm="gn_ws"``: GroupNorm after
    weight-standardised convs."""
    bias, std = norm in (None, "none"), norm == "gn_ws"
    layers: list[nn.Module] = []
    for _ in range(depth):
        if light_block:
            conv = LightConv(channels, light_block, separable_head=False, bias=bias,
                             standardize=std)
        else:
            conv = conv2d(channels, channels, 3, padding=1, bias=bias, standardize=std)
        layers += [conv, _norm(norm, channels), _act(act)]
    return nn.Sequential(*layers)


class ConvHead(nn.Module):
    """A class or box subnet shared over levels: 3x3 conv tower, then a 3x3 predictor.

    With ``width`` set, each level first gets its own 1x1 conv + BN + SiLU stem from its
    ``in_channels`` to ``width`` (levels of different widths, as RepGFPN gives); without, every
    level must have the same channels (RetinaNet). ``light``: indices of the levels that get
    their own ``LightConv(light_block)`` layers (with their own norms) for the first
    ``light_depth`` tower layers (None: all), the shared tower's layers after them; the
    predictor stays shared. Tower and predictor convs are initialised
    N(0, 0.01) with zero bias; the predictor's bias is ``-log((1 - p) / p)`` for a
    ``prior_prob`` p (the class subnet). The output is ``[B, sum_l H_l W_l anchors,
    num_outputs]`` (levels, row-major locations, anchors), as ``Detector`` expects.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_outputs: int,
        num_anchors: int,
        depth: int,
        width: int | None = None,
        norm: str | None = None,
        act: str = "relu",
        prior_prob: float | None = None,
        light: Sequence[int] = (),
        light_block: str = "grouped",
        light_depth: int | None = None,
    ) -> None:
        super().__init__()
        if width is None and len(set(in_channels)) != 1:
            raise ValueError(f"levels of different channels {in_channels} need a head width")
        self.num_outputs = num_outputs
        self.stems = nn.ModuleList(
            ConvBnAct(c, width, 1, act=True) for c in (in_channels if width else [])
        )
        width = width or in_channels[0]
        self.width = width  # channels of the tower and of the predictor's input
        self.tower = conv_tower(width, depth, norm, act)
        self.predictor = nn.Conv2d(width, num_anchors * num_outputs, 3, padding=1)
        # built after the shared layers, so a head without light levels draws the same init
        self.light = nn.ModuleDict(
            {str(level): conv_tower(width, light_layers(light_depth, depth), norm, act,
                                    light_block) for level in light}
        )
        for m in [*self.tower.modules(), self.predictor, *self.light.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if prior_prob is not None:
            nn.init.constant_(self.predictor.bias, -math.log((1 - prior_prob) / prior_prob))

    @property
    def num_layers(self) -> int:
        """Conv layers of the tower (``run_tower`` runs a range of them; stems come before)."""
        return len(self.tower) // 3

    def run_tower(self, x: torch.Tensor, level: int, start: int = 0) -> torch.Tensor:
        """The level's stem (when ``start`` is 0) and tower layers ``start..``."""
        if self.stems and start == 0:
            x = self.stems[level](x)
        light = self.light[str(level)] if str(level) in self.light else self.tower[:0]
        return self.tower[max(3 * start, len(light)):](light[3 * start:](x))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The predictor on one level's tower output: ``[B, H * W * anchors, num_outputs]``."""
        x = self.predictor(x)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.num_outputs)

    def forward(self, feats: list[torch.Tensor], return_hidden: bool = False):
        """``[B, sum_l H_l W_l anchors, num_outputs]``; with ``return_hidden`` also the tower
        outputs per level (CrossKD's taps)."""
        hidden = [self.run_tower(x, level) for level, x in enumerate(feats)]
        out = torch.cat([self.project(h) for h in hidden], dim=1)
        return (out, hidden) if return_hidden else out
