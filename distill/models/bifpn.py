"""BiFPN neck (EfficientDet) with fast-normalized, softmax or sum fusion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBnAct, SeparableConv, check_padding, downsample2x

FUSION_MODES = ("fast", "softmax", "sum")


class WeightedFusion(nn.Module):
    """Fuse same-shape inputs with learned per-input weights.

    ``fast``: ``sum(relu(w_i) x_i) / (eps + sum relu(w_j))``;
    ``softmax``: ``sum(softmax(w)_i x_i)``; ``sum``: plain sum (no weights).
    """

    def __init__(self, num_inputs: int, mode: str = "fast", eps: float = 1e-4) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}, expected one of {FUSION_MODES}")
        self.mode = mode
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_inputs)) if mode != "sum" else None

    def normalized_weights(self) -> torch.Tensor | None:
        """The effective weight of each input (``None`` for ``sum``)."""
        if self.weight is None:
            return None
        if self.mode == "softmax":
            return torch.softmax(self.weight, dim=0)
        w = F.relu(self.weight)
        return w / (w.sum() + self.eps)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        # effdet's order of operations: imported effdet weights give bit-identical outputs
        if self.weight is None:
            return torch.stack(inputs, dim=-1).sum(dim=-1)
        weight = self.weight.to(inputs[0].dtype)
        if self.mode == "softmax":
            return (torch.stack(inputs, dim=-1) * torch.softmax(weight, dim=0)).sum(dim=-1)
        weight = F.relu(weight)
        total = weight.sum() + self.eps
        return torch.stack([x * weight[i] / total for i, x in enumerate(inputs)], dim=-1).sum(-1)


def bifpn_nodes(num_levels: int) -> list[tuple[int, list[int]]]:
    """Nodes of one BiFPN cell as ``(level, input ids)``; ids index inputs then earlier nodes."""
    last = {lvl: lvl for lvl in range(num_levels)}
    every = {lvl: [lvl] for lvl in range(num_levels)}
    nodes: list[tuple[int, list[int]]] = []
    next_id = num_levels
    for lvl in range(num_levels - 2, -1, -1):  # top-down
        nodes.append((lvl, [last[lvl], last[lvl + 1]]))
        last[lvl] = next_id
        every[lvl].append(next_id)
        next_id += 1
    for lvl in range(1, num_levels):  # bottom-up
        nodes.append((lvl, every[lvl] + [last[lvl - 1]]))
        last[lvl] = next_id
        every[lvl].append(next_id)
        next_id += 1
    return nodes


class FusionNode(nn.Module):
    """Resample each input to the node's level, fuse, then SiLU + separable conv + BN."""

    def __init__(
        self,
        in_channels: list[int],
        in_levels: list[int],
        level: int,
        channels: int,
        mode: str,
        conv_bias: bool = True,
        padding: str = "",
    ) -> None:
        super().__init__()
        self.level = level
        self.in_levels = in_levels
        self.padding = check_padding(padding)
        # fusion first: the state_dict order then matches effdet's (weights before resamples)
        self.fusion = WeightedFusion(len(in_channels), mode)
        self.resample = nn.ModuleList(
            ConvBnAct(c, channels, 1, bias=conv_bias) if c != channels else nn.Identity()
            for c in in_channels
        )
        self.act = nn.SiLU()
        self.conv = SeparableConv(channels, channels, 3, bias=conv_bias, norm=True, act=False)

    def forward(self, inputs: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        nodes = []
        for x, in_level, resample in zip(inputs, self.in_levels, self.resample, strict=True):
            x = resample(x)
            if in_level < self.level:
                x = downsample2x(x, self.padding)
            elif in_level > self.level:
                x = F.interpolate(x, size=size, mode="nearest")
            nodes.append(x)
        return self.conv(self.act(self.fusion(nodes)))


class BiFPNCell(nn.Module):
    """One BiFPN repeat: top-down then bottom-up fusion over all levels."""

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        mode: str,
        conv_bias: bool,
        padding: str = "",
    ) -> None:
        super().__init__()
        self.num_levels = len(in_channels)
        self.specs = bifpn_nodes(self.num_levels)
        chans = list(in_channels)
        levels = list(range(self.num_levels))
        self.nodes = nn.ModuleList()
        for level, ids in self.specs:
            self.nodes.append(
                FusionNode(
                    [chans[i] for i in ids],
                    [levels[i] for i in ids],
                    level,
                    channels,
                    mode,
                    conv_bias,
                    padding,
                )
            )
            chans.append(channels)
            levels.append(level)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes = [tuple(f.shape[-2:]) for f in feats]
        x = list(feats)
        for (level, ids), node in zip(self.specs, self.nodes, strict=True):
            x.append(node([x[i] for i in ids], sizes[level]))
        return x[-self.num_levels :]


class BiFPN(nn.Module):
    """Stack of ``repeats`` BiFPN cells; the output has ``channels`` at every level.

    ``padding="same"`` downsamples with TensorFlow SAME max-pools (effdet's ``pad_type='same'``).
    """

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        repeats: int,
        fusion: str = "fast",
        conv_bias: bool = True,
        padding: str = "",
    ) -> None:
        super().__init__()
        cells = []
        for _ in range(repeats):
            cells.append(BiFPNCell(in_channels, channels, fusion, conv_bias, padding))
            in_channels = [channels] * len(in_channels)
        self.cells = nn.ModuleList(cells)
        self.out_channels = [channels] * len(in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        for cell in self.cells:
            feats = cell(feats)
        return feats
