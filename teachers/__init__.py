"""Teacher presets; importing this package registers them in the model registry.

The EfficientDet D0..D7 teachers are registered by ``distill.models.efficientdet``; this package
adds RetinaNet on any timm backbone and the DAMO-style heavy-neck teacher.
"""

from .common import build_teacher, register_teachers
from .heavy_neck import HEAVY_NECK_PRESETS, HeavyNeckConfig, build_heavy_neck
from .heavy_neck import describe as _describe_heavy_neck
from .retinanet import RETINANET_PRESETS, RetinaNetConfig, build_retinanet
from .retinanet import describe as _describe_retinanet

register_teachers(
    RETINANET_PRESETS,
    build_retinanet,
    _describe_retinanet,
    descriptions={
        "retinanet": "RetinaNet on any timm backbone (override backbone=NAME; default resnet50)"
    },
)
register_teachers(HEAVY_NECK_PRESETS, build_heavy_neck, _describe_heavy_neck)

__all__ = [
    "HEAVY_NECK_PRESETS",
    "RETINANET_PRESETS",
    "HeavyNeckConfig",
    "RetinaNetConfig",
    "build_heavy_neck",
    "build_retinanet",
    "build_teacher",
]
