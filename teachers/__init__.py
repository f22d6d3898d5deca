"""Teacher families and presets: importing this package registers them in the model registry
(``distill`` finds it through the ``distill.models`` entry point in ``pyproject.toml``).

The EfficientDet D0..D7 teachers are registered by ``distill.models.efficientdet``; this package
adds RetinaNet on any timm backbone and the DAMO-style heavy-neck teacher.
"""

from .heavy_neck import HEAVY_NECK_PRESETS, HeavyNeckConfig, build_heavy_neck
from .retinanet import RETINANET_PRESETS, RetinaNetConfig, build_retinanet

__all__ = [
    "HEAVY_NECK_PRESETS",
    "RETINANET_PRESETS",
    "HeavyNeckConfig",
    "RetinaNetConfig",
    "build_heavy_neck",
    "build_retinanet",
]
