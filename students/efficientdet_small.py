"""Scaled-down EfficientDet presets below D0 ("D minus 1/2/3") for distillation students."""

from __future__ import annotations

from distill.models.efficientdet import (
    EfficientDetConfig,
    build_efficientdet,
    efficientdet_config,
)
from distill.models.registry import register_preset

# name: phi; the config follows the compound-scaling formulas of efficientdet_config(phi)
SMALL_PRESETS: dict[str, float] = {
    "efficientdet_dm1": -1,
    "efficientdet_dm2": -2,
    "efficientdet_dm3": -3,
}


def _describe(cfg: EfficientDetConfig, phi: float) -> str:
    return (
        f"EfficientDet phi={phi:g} student ({cfg.backbone}, BiFPN {cfg.fpn_channels}x"
        f"{cfg.fpn_repeats}, head x{cfg.head_repeats}, {cfg.image_size}px)"
    )


for _name, _phi in SMALL_PRESETS.items():
    _cfg = efficientdet_config(_phi, _name)
    register_preset(_name, build_efficientdet, _cfg, _describe(_cfg, _phi))
