"""timm backbone wrapper that yields strides 8/16/32 plus extra P6/P7 levels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .layers import ConvBnAct, check_padding, downsample2x


def pick_indices(reductions: list[int], strides: tuple[int, ...]) -> list[int]:
    """Index of the last feature with each wanted reduction (stride)."""
    picked = []
    for stride in strides:
        matches = [i for i, r in enumerate(reductions) if r == stride]
        if not matches:
            raise ValueError(f"backbone has no feature at stride {stride} (has {reductions})")
        picked.append(matches[-1])
    return picked


def extra_levels(
    in_channels: int, num_extra: int, extra_channels: int, conv_bias: bool = True
) -> tuple[nn.ModuleList, list[int]]:
    """The convs before effdet's extra levels (P6, P7, ...) and those levels' channels: a 1x1
    conv + BN where the channels change, else identity; each level then max-pools (stride 2)."""
    convs, channels = nn.ModuleList(), []
    for _ in range(num_extra):
        if in_channels != extra_channels:
            convs.append(ConvBnAct(in_channels, extra_channels, 1, bias=conv_bias))
        else:
            convs.append(nn.Identity())
        in_channels = extra_channels
        channels.append(extra_channels)
    return convs, channels


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model returning the levels at ``strides``.

    ``num_extra`` further levels are made like effdet: a 1x1 conv + BN when the channels differ
    from ``extra_channels``, then max-pool with stride 2 (the later ones only pool), padded as
    ``padding`` says ("" symmetric, "same" TensorFlow SAME). The timm model pads as its name says
    (``tf_`` models use SAME padding).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        weights_file: str | Path | None = None,
        strides: tuple[int, ...] = (8, 16, 32),
        num_extra: int = 2,
        extra_channels: int = 64,
        conv_bias: bool = True,
        padding: str = "",
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.padding = check_padding(padding)
        if weights_file is not None:
            pretrained = True
            timm_kwargs["pretrained_cfg_overlay"] = dict(file=str(weights_file))
        self.body = timm.create_model(
            name, features_only=True, pretrained=pretrained, **timm_kwargs
        )
        info = self.body.feature_info
        self.indices = pick_indices(list(info.reduction()), strides)
        channels = [info.channels()[i] for i in self.indices]
        self.extra, extra = extra_levels(channels[-1], num_extra, extra_channels, conv_bias)
        self.channels: list[int] = channels + extra
        self.strides: list[int] = list(strides) + [
            strides[-1] * 2 ** (i + 1) for i in range(num_extra)
        ]

    @classmethod
    def from_config(cls, cfg: Any, pretrained: bool = False, **settings: Any) -> TimmBackbone:
        """The backbone a family config names: ``cfg.backbone`` (a timm model name),
        ``cfg.backbone_weights`` (a local weights file), ``cfg.drop_path_rate`` (passed to timm
        when > 0); ``settings`` are the other ``TimmBackbone`` arguments (strides, extra
        levels). The one way every family builds a timm backbone."""
        if getattr(cfg, "drop_path_rate", 0):
            settings["drop_path_rate"] = cfg.drop_path_rate
        weights = getattr(cfg, "backbone_weights", None)
        return cls(cfg.backbone, pretrained=pretrained,
                   weights_file=Path(weights) if weights else None, **settings)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        out = [feats[i] for i in self.indices]
        for conv in self.extra:
            out.append(downsample2x(conv(out[-1]), self.padding))
        return out
