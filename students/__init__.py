"""Student families and presets: importing this package registers them in the model registry
(``distill`` finds it through the ``distill.models`` entry point in ``pyproject.toml``)."""

from . import efficientdet_small  # noqa: F401  (registers efficientdet_dm1..dm3)
from .damo_yolo import DAMO_PRESETS  # noqa: F401  (registers damo_yolo_t, _s, _m, _l, ...)
from .efficientdet_small import SMALL_PRESETS
from .nas import detector, smnas  # noqa: F401  (register maenas_dm1..dm3 and smnas)
from .nas.detector import PRESET_PHI

__all__ = ["PRESET_PHI", "SMALL_PRESETS"]
