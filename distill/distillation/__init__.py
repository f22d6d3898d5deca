"""Feature distillation parts: losses, per-level align/normalise module, weight schedules."""

from distill.distillation.align import FeatureDistiller
from distill.distillation.losses import FEATURE_LOSSES, cwd_loss, feature_loss, mimic_loss
from distill.distillation.schedules import WeightSchedule

__all__ = [
    "FEATURE_LOSSES",
    "FeatureDistiller",
    "WeightSchedule",
    "cwd_loss",
    "feature_loss",
    "mimic_loss",
]
