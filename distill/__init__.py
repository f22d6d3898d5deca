"""Knowledge distillation of object detectors; ``load_detector`` uses a trained one."""

from __future__ import annotations

from typing import Any

__all__ = ["load_detector"]


def __getattr__(name: str) -> Any:
    """``distill.load_detector`` on first use, so ``import distill`` stays light."""
    if name == "load_detector":
        from distill.inference import load_detector

        return load_detector
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
