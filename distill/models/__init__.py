"""Detector building blocks, the model contract, the EfficientDet family and the model registry."""

from .anchor_detector import AnchorDetector
from .detector import Detector, DetectorOutput
from .registry import MODELS, build_model, list_models, model_description, register_model

__all__ = [
    "MODELS",
    "AnchorDetector",
    "Detector",
    "DetectorOutput",
    "build_model",
    "list_models",
    "model_description",
    "register_model",
]
