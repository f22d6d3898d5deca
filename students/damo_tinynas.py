"""DAMO-YOLO's TinyNAS backbones: residual (``TinyNAS_res``, T and S) and CSP (``TinyNAS_csp``,
M and L).

A Focus stem (space-to-depth, then a 3x3 conv-BN-act) and stages of residual ``k1kx`` blocks:
1x1 conv-BN to the bottleneck width, act, a RepConv 3x3 (stride 2 in the first block of a
downsampling stage, no activation inside), the residual (a 1x1 conv-BN when the width changes,
none at all in a stride-2 block), act. An SPP bottleneck (max-pools 5 / 9 / 13, SiLU) follows
the first block of the last stage. The searched structures are DAMO-YOLO's published ones
(``tinynas_L20_k1kx`` for T, ``tinynas_L25_k1kx`` for S), written as ``Stage`` rows; the maps
of the stages at strides 8, 16 and 32 (the last stage of each) are returned.

The CSP form (``tinynas_L35_kxkx`` for M, ``tinynas_L45_kxkx`` for L) wraps each stage (the
fourth and fifth, stride 16 and 16, as one) in a CSP stage: a stride-2 3x3 conv-BN-ReLU to
twice the hidden width (SPP after it in the last stage), a 1x1 branch kept, a 1x1 branch through
the stage's ``kxkx`` blocks (3x3 conv-BN to the bottleneck, act, RepConv back, residual) at half
the stage width, both concatenated and fused by a 1x1 conv (ReLU in the wrappers, as DAMO's
code has it; ``act`` in the blocks). A stride-2 stage has one block fewer (its downsampler).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from distill.models.giraffe import ConvBNAct, RepConv, activation
from distill.search.space import STEM, Block, Structure


@dataclass(frozen=True)
class Stage:
    """One searched stage: ``depth`` blocks ``in_ch`` -> ``out_ch`` through ``bottleneck``."""

    in_ch: int
    out_ch: int
    bottleneck: int
    stride: int
    depth: int
    kernel: int = 3


# (stem width, stages): DAMO-YOLO's tinynas_L20_k1kx.txt and tinynas_L25_k1kx.txt
TINYNAS_STRUCTURES: dict[str, tuple[int, tuple[Stage, ...]]] = {
    "tinynas_l20_k1kx": (24, (Stage(24, 64, 24, 2, 2), Stage(64, 96, 64, 2, 2),
                              Stage(96, 192, 96, 2, 2), Stage(192, 192, 152, 1, 2),
                              Stage(192, 384, 192, 2, 1))),
    "tinynas_l25_k1kx": (32, (Stage(32, 128, 24, 2, 1), Stage(128, 128, 88, 2, 5),
                              Stage(128, 256, 128, 2, 3), Stage(256, 256, 120, 1, 2),
                              Stage(256, 512, 144, 2, 1))),
}
TINYNAS_CSP_STRUCTURES: dict[str, tuple[int, tuple[Stage, ...]]] = {
    "tinynas_l35_kxkx": (32, (Stage(32, 128, 64, 2, 2), Stage(128, 128, 64, 2, 4),
                              Stage(128, 256, 256, 2, 4), Stage(256, 256, 256, 1, 4),
                              Stage(256, 512, 256, 2, 3))),
    "tinynas_l45_kxkx": (32, (Stage(32, 128, 96, 2, 3), Stage(128, 128, 96, 2, 5),
                              Stage(128, 256, 384, 2, 5), Stage(256, 256, 384, 1, 5),
                              Stage(256, 512, 384, 2, 4))),
}


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels to 4x the channels), then a conv-BN-act."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, act: str) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_ch * 4, out_ch, kernel, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                       x[..., 1::2, 1::2]], 1)
        return self.conv(x)


class ResBlock(nn.Module):
    """TinyNAS residual block (see the module docstring): ``k1kx`` reduces with a 1x1 conv,
    ``kxkx`` with a ``kernel`` one."""

    def __init__(self, in_ch: int, out_ch: int, bottleneck: int, kernel: int, stride: int,
                 act: str, kind: str = "k1kx") -> None:
        super().__init__()
        k = 1 if kind == "k1kx" else kernel
        self.reduce = nn.Sequential(nn.Conv2d(in_ch, bottleneck, k, padding=k // 2, bias=False),
                                    nn.BatchNorm2d(bottleneck))
        self.rep = RepConv(bottleneck, out_ch, stride, act="identity")
        self.stride = stride
        self.proj = None
        if in_ch != out_ch and stride != 2:
            self.proj = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False),
                                      nn.BatchNorm2d(out_ch))
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rep(self.act(self.reduce(x)))
        if self.stride != 2:
            y = y + (self.proj(x) if self.proj is not None else x)
        return self.act(y)


class SPPBottleneck(nn.Module):
    """1x1 conv to half width, max-pools 5 / 9 / 13 concatenated, 1x1 conv back (SiLU)."""

    def __init__(self, channels: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = channels // 2
        self.reduce = ConvBNAct(channels, hidden, 1, act="silu")
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.expand = ConvBNAct(hidden * (len(kernels) + 1), channels, 1, act="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.expand(torch.cat([x] + [pool(x) for pool in self.pools], 1))


def staged_blocks(stage: Stage, block: Callable[[int, int], nn.Module], spp: bool
                  ) -> nn.Sequential:
    """``stage.depth`` blocks ``block(in_ch, stride)``: the first from the stage's input width
    with its stride, the others at its output width; an SPP after the first when ``spp``."""
    blocks: list[nn.Module] = []
    for i in range(stage.depth):
        in_ch, stride = (stage.in_ch, stage.stride) if i == 0 else (stage.out_ch, 1)
        blocks.append(block(in_ch, stride))
        if i == 0 and spp:
            blocks.append(SPPBottleneck(stage.out_ch))
    return nn.Sequential(*blocks)


class StagedBackbone(nn.Module):
    """A stem (stride 2) and stages in a row; the outputs are the last stage at each of the
    strides 8, 16 and 32, with their ``channels`` and ``strides``."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], specs: list[Stage]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        stride, taps = 2, {}
        for i, spec in enumerate(specs):
            stride *= spec.stride
            taps[stride] = i  # the last stage at each stride
        self.indices = [taps[s] for s in (8, 16, 32)]
        self.channels = [specs[i].out_ch for i in self.indices]
        self.strides = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, outs = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.indices:
                outs.append(x)
        return outs


class TinyNasRes(StagedBackbone):
    """A ``TINYNAS_STRUCTURES`` backbone; ``channels`` / ``strides`` of its three outputs."""

    def __init__(self, structure: str, act: str = "relu", spp: bool = True) -> None:
        if structure not in TINYNAS_STRUCTURES:
            raise ValueError(f"unknown TinyNAS structure {structure!r}; valid: "
                             f"{', '.join(TINYNAS_STRUCTURES)}")
        stem, specs = TINYNAS_STRUCTURES[structure]
        stem_module = Focus(3, stem, 3, act)  # built first: the same initial weights as before
        stages = [staged_blocks(
            s, lambda c, stride, s=s: ResBlock(c, s.out_ch, s.bottleneck, s.kernel, stride, act),
            spp and i == len(specs) - 1) for i, s in enumerate(specs)]
        super().__init__(stem_module, stages, specs)


class CspStage(nn.Module):
    """A TinyNAS CSP stage (see the module docstring): ``in_ch`` -> ``out_ch``, stride 2."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int, blocks: list[nn.Module],
                 spp: bool = False) -> None:
        super().__init__()
        self.down = ConvBNAct(in_ch, 2 * hidden, 3, 2, act="relu")
        self.spp = SPPBottleneck(2 * hidden) if spp else nn.Identity()
        self.start = ConvBNAct(2 * hidden, hidden, 1, act="relu")
        self.shortcut = ConvBNAct(2 * hidden, out_ch // 2, 1, act="relu")
        self.blocks = nn.Sequential(*blocks)
        self.fuse = ConvBNAct(out_ch, out_ch, 1, act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.spp(self.down(x))
        return self.fuse(torch.cat([self.blocks(self.start(x)), self.shortcut(x)], 1))


def _csp_blocks(stage: Stage, act: str) -> list[nn.Module]:
    """A stage's ``kxkx`` blocks at half its width (one fewer when it downsamples)."""
    half = stage.out_ch // 2
    count = stage.depth - 1 if stage.stride == 2 else stage.depth
    ins = [stage.in_ch // 2 if stage.stride == 1 and i == 0 else half for i in range(count)]
    return [ResBlock(c, half, stage.bottleneck, stage.kernel, 1, act, "kxkx") for c in ins]


class TinyNasCsp(nn.Module):
    """A ``TINYNAS_CSP_STRUCTURES`` backbone (five stages; the fourth joins the third)."""

    def __init__(self, structure: str, act: str = "silu", spp: bool = True) -> None:
        super().__init__()
        if structure not in TINYNAS_CSP_STRUCTURES:
            raise ValueError(f"unknown TinyNAS CSP structure {structure!r}; valid: "
                             f"{', '.join(TINYNAS_CSP_STRUCTURES)}")
        stem, (s1, s2, s3, s4, s5) = TINYNAS_CSP_STRUCTURES[structure]
        self.stem = Focus(3, stem, 3, act)
        self.stages = nn.ModuleList([
            CspStage(s1.in_ch, s1.out_ch // 2, s1.out_ch, _csp_blocks(s1, act)),
            CspStage(s2.in_ch, s2.out_ch // 2, s2.out_ch, _csp_blocks(s2, act)),
            CspStage(s3.in_ch, s3.out_ch // 2, s4.out_ch,
                     _csp_blocks(s3, act) + _csp_blocks(s4, act)),
            CspStage(s5.in_ch, s5.out_ch // 2, s5.out_ch, _csp_blocks(s5, act), spp=spp),
        ])
        self.channels = [s2.out_ch, s4.out_ch, s5.out_ch]
        self.strides = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stages[0](self.stem(x))
        outs = []
        for stage in self.stages[1:]:
            x = stage(x)
            outs.append(x)
        return outs


def tinynas_backbone(structure: str, act: str) -> nn.Module:
    """The residual or CSP TinyNAS backbone of ``structure`` with activation ``act``."""
    if structure in TINYNAS_CSP_STRUCTURES:
        return TinyNasCsp(structure, act)
    return TinyNasRes(structure, act)


TINYNAS_NAMES = (*TINYNAS_STRUCTURES, *TINYNAS_CSP_STRUCTURES)


def search_structure(structure: str) -> Structure:
    """A residual ``TINYNAS_STRUCTURES`` entry as a structure of our MAE-NAS space (stem conv
    + ``k1kx`` stages), so our search and scorer can measure it and ``NasBackbone`` build it.
    Not the same network as ``TinyNasRes``: a 3x3 stride-2 stem conv for the Focus stem, no
    SPP, a plain conv for the RepConv, and a 1x1 projection shortcut on each stage's first unit
    (DAMO's stride-2 units have none)."""
    if structure not in TINYNAS_STRUCTURES:
        raise ValueError(f"{structure!r} is not a residual TinyNAS structure; valid: "
                         f"{', '.join(TINYNAS_STRUCTURES)}")
    stem, stages = TINYNAS_STRUCTURES[structure]
    return (Block(STEM, 3, stem, 2, 3),) + tuple(
        Block("k1kx", s.in_ch, s.out_ch, s.stride, s.kernel, s.depth, s.bottleneck)
        for s in stages)
