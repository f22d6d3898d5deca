"""Student presets; importing this package registers them in the model registry."""

from .efficientdet_small import SMALL_PRESETS, register_small_presets

__all__ = ["SMALL_PRESETS", "register_small_presets"]
