"""Distillation: registries of term kinds and losses, the built-in ones, and their parts."""

from distill.distillation import fgd, losses, mgd, prediction_losses  # noqa: F401  (registrations)
from distill.distillation.align import FeatureDistiller
from distill.distillation.losses import cwd_loss, mimic_loss
from distill.distillation.registry import BOX_KD_LOSSES, CLS_KD_LOSSES, FEATURE_LOSSES, TERMS
from distill.distillation.schedules import WeightSchedule

__all__ = [
    "BOX_KD_LOSSES",
    "CLS_KD_LOSSES",
    "FEATURE_LOSSES",
    "TERMS",
    "FeatureDistiller",
    "WeightSchedule",
    "cwd_loss",
    "mimic_loss",
]
