"""Lightning modules and callbacks."""

from distill.lightning.detection import DetectionModule
from distill.lightning.ema import WarmupEMA

__all__ = ["DetectionModule", "WarmupEMA"]
