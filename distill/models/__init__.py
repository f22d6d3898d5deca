"""Detector building blocks, the EfficientDet family and the model registry."""

from .detector import Detector, DetectorOutput
from .registry import build_model, list_models, model_description, register_model

__all__ = [
    "Detector",
    "DetectorOutput",
    "build_model",
    "list_models",
    "model_description",
    "register_model",
]
