"""Scaled-down EfficientDet presets below D0 ("D minus 1/2/3") for distillation students."""

from __future__ import annotations

from typing import Any

from distill.models.detector import Detector
from distill.models.efficientdet import (
    EfficientDetConfig,
    build_from_config,
    efficientdet_config,
)
from distill.models.registry import register_model

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


def register_small_presets() -> None:
    """Register every entry of ``SMALL_PRESETS`` in the model registry."""
    for name, phi in SMALL_PRESETS.items():
        cfg = efficientdet_config(phi, name)

        def builder(
            num_classes: int,
            image_size: int | None = None,
            pretrained: bool = False,
            _cfg: EfficientDetConfig = cfg,
            **overrides: Any,
        ) -> Detector:
            return build_from_config(_cfg, num_classes, image_size, pretrained, **overrides)

        register_model(name, _describe(cfg, phi))(builder)


register_small_presets()
