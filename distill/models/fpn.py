"""The feature pyramid of RetinaNet (Lin et al. 2017) on backbone maps C3..C5, plus P6 / P7."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """Feature pyramid: laterals + top-down sum + 3x3 smoothing, then ``num_extra`` stride-2 convs.

    The first extra level convolves the top backbone map (``p6_from_backbone``) or the top FPN
    output; each later one convolves ReLU of the previous (RetinaNet's P6 / P7).
    """

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        num_extra: int = 2,
        p6_from_backbone: bool = True,
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels
        )
        self.p6_from_backbone = p6_from_backbone
        first_in = in_channels[-1] if p6_from_backbone else channels
        self.extra = nn.ModuleList(
            nn.Conv2d(first_in if i == 0 else channels, channels, 3, stride=2, padding=1)
            for i in range(num_extra)
        )
        self.out_channels = [channels] * (len(in_channels) + num_extra)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # Detectron's "c2_xavier_fill"
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral, feats)]
        for i in range(len(laterals) - 2, -1, -1):
            up = F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
            laterals[i] = laterals[i] + up
        outs = [conv(x) for conv, x in zip(self.output, laterals)]
        x = feats[-1] if self.p6_from_backbone else outs[-1]
        for i, conv in enumerate(self.extra):
            x = conv(F.relu(x) if i > 0 else x)
            outs.append(x)
        return outs
