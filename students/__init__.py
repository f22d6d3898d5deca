"""Student presets; importing this package registers them in the model registry."""

from .efficientdet_small import SMALL_PRESETS, register_small_presets
from .nas.detector import PRESET_PHI, register_nas_models
from .nas.smnas import register_smnas

__all__ = ["PRESET_PHI", "SMALL_PRESETS", "register_nas_models", "register_small_presets",
           "register_smnas"]
