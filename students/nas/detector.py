"""Searched students: a backbone read from ``structure.json`` under an EfficientDet neck and head.

The ``maenas_*`` presets pair a structure committed under ``students/structures/`` with the BiFPN
and heads of the EfficientDet student of similar multiply-adds; ``model.options.structure:
path/to/structure.json`` puts any searched structure under the same neck and heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.models.detector import Detector
from distill.models.efficientdet import (
    EfficientDetParts,
    efficientdet_config,
    efficientdet_on_backbone,
)
from distill.models.registry import register_preset
from distill.search.presets import resolve_structure
from distill.search.space import load_structure

from .backbone import NasBackbone

STRUCTURES_DIR = Path(__file__).resolve().parents[1] / "structures"


@dataclass
class NasDetConfig(EfficientDetParts):
    """A searched backbone (``structure``: a structure.json path or a preset name under
    ``students/structures/``) with BiFPN, heads, anchors and options as in
    ``EfficientDetConfig``."""

    name: str
    image_size: int
    structure: str | None = None
    fpn_channels: int = 64
    fpn_repeats: int = 3
    head_repeats: int = 3
    drop_path_rate: float = 0.0  # the searched backbone has no stochastic depth: must stay 0


def build_nas_detector(cfg: NasDetConfig, num_classes: int, pretrained: bool = False) -> Detector:
    """The detector of ``cfg``; the backbone is built from its structure file."""
    if pretrained:
        raise ValueError("model.pretrained: searched backbones have no pretrained weights")
    if cfg.drop_path_rate:
        raise ValueError(f"model.drop_path_rate: {cfg.drop_path_rate}; searched backbones have "
                         "no stochastic depth, set it to 0")
    backbone = NasBackbone(
        load_structure(resolve_structure(cfg.structure)),
        strides=(8, 16, 32),
        num_extra=2,
        extra_channels=cfg.fpn_channels,
        padding=cfg.padding,
        conv_bias=cfg.conv_bias,
    )
    return efficientdet_on_backbone(backbone, cfg, num_classes)


def preset_config(name: str, phi: int, structure: str | None) -> NasDetConfig:
    """Neck, heads and image size of the EfficientDet student ``phi`` with ``structure``."""
    eff = efficientdet_config(phi)
    return NasDetConfig(name=name, image_size=eff.image_size, structure=structure,
                        fpn_channels=eff.fpn_channels, fpn_repeats=eff.fpn_repeats,
                        head_repeats=eff.head_repeats, fusion=eff.fusion)


# preset name -> the EfficientDet student whose neck, heads and multiply-adds it matches
PRESET_PHI: dict[str, int] = {"maenas_dm3": -3, "maenas_dm2": -2, "maenas_dm1": -1}


# the maenas_* presets; model.options.structure swaps in another structure.json (e.g. one that
# `distill search` wrote) under the same neck and heads
for _name, _phi in PRESET_PHI.items():
    _cfg = preset_config(_name, _phi, _name)
    register_preset(_name, build_nas_detector, _cfg,
                    f"MAE-NAS searched backbone at efficientdet_dm{-_phi}'s multiply-adds, "
                    f"BiFPN {_cfg.fpn_channels}x{_cfg.fpn_repeats}, head x{_cfg.head_repeats}, "
                    f"{_cfg.image_size}px")
