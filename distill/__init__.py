"""Knowledge distillation of object detectors; ``load_detector`` uses a trained one."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["__version__", "load_detector"]

try:
    __version__ = version("distill-det")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"


def __getattr__(name: str) -> Any:
    """``distill.load_detector`` on first use, so ``import distill`` stays light."""
    if name == "load_detector":
        from distill.inference import load_detector

        return load_detector
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
