"""Scaled-down EfficientDet presets below D0 ("D minus 1/2/3") for distillation students."""

from __future__ import annotations

from distill.models.efficientdet import EfficientDetConfig, efficientdet_config, register_config

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

        register_config(name, cfg, _describe(cfg, phi))


register_small_presets()
