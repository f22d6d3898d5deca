"""DAMO-YOLO's TinyNAS mobile backbones (``TinyNAS_mob``: the nano models).

A stride-2 3x3 conv-BN-act stem and stages of mobile inverted residual blocks
(``distill.models.giraffe.MobileBlock``: 1x1 expand, 5x5 depthwise, 1x1 project; the input
added back when the shape is kept), the expansion growing with the stage: ``3.5 + 0.5 (i - 1)``
for stage ``i`` = 1..5, rounded to multiples of 8. An SPP bottleneck follows the first block of
the last stage; the last stage at each of strides 8, 16 and 32 is returned. The structures are
DAMO-YOLO's published ``tinynas_nano_small`` / ``_middle`` / ``_large`` (Ns / Nm / Nl),
written as ``Stage`` rows (the bottleneck widths are unused by these blocks).
"""

from __future__ import annotations

from distill.models.giraffe import ConvBNAct, MobileBlock

from .damo_tinynas import Stage, StagedBackbone, staged_blocks

# (stem width, stages): DAMO-YOLO's tinynas_nano_small / _middle / _large.txt
TINYNAS_MOBILE_STRUCTURES: dict[str, tuple[int, tuple[Stage, ...]]] = {
    "tinynas_nano_small": (16, (Stage(16, 24, 24, 2, 1), Stage(24, 40, 64, 2, 2),
                                Stage(40, 64, 40, 2, 2), Stage(64, 80, 152, 1, 2),
                                Stage(80, 160, 192, 2, 2))),
    "tinynas_nano_middle": (16, (Stage(16, 40, 24, 2, 2), Stage(40, 64, 64, 2, 2),
                                 Stage(64, 112, 40, 2, 2), Stage(112, 128, 152, 1, 2),
                                 Stage(128, 256, 192, 2, 1))),
    "tinynas_nano_large": (24, (Stage(24, 48, 24, 2, 1), Stage(48, 80, 64, 2, 2),
                                Stage(80, 160, 40, 2, 2), Stage(160, 160, 152, 1, 3),
                                Stage(160, 320, 192, 2, 2))),
}


class TinyNasMobile(StagedBackbone):
    """A ``TINYNAS_MOBILE_STRUCTURES`` backbone; ``channels`` / ``strides`` of its outputs."""

    def __init__(self, structure: str, act: str = "silu", spp: bool = True) -> None:
        if structure not in TINYNAS_MOBILE_STRUCTURES:
            raise ValueError(f"unknown TinyNAS mobile structure {structure!r}; valid: "
                             f"{', '.join(TINYNAS_MOBILE_STRUCTURES)}")
        stem, specs = TINYNAS_MOBILE_STRUCTURES[structure]
        stem_module = ConvBNAct(3, stem, 3, 2, act)  # built first: the same initial weights
        stages = []
        for i, s in enumerate(specs):
            expansion = 3.5 + i * 0.5  # grows by stage position, as DAMO's mobile blocks do
            stages.append(staged_blocks(
                s, lambda c, stride, s=s, e=expansion: MobileBlock(c, s.out_ch, stride, e, act),
                spp and i == len(specs) - 1))
        super().__init__(stem_module, stages, specs)
