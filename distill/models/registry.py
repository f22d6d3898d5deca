"""Name -> builder registry for detectors."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from torch import nn

from .norms import convert_gn_ws
from .options import validate_options

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable:
    """Decorator registering ``fn(num_classes, image_size=None, pretrained=False, **overrides)``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().split("\n")[0]
        return fn

    return wrap


def replace_config(cfg: Any, **overrides: Any) -> Any:
    """A copy of the dataclass ``cfg`` with ``overrides``; unknown keys raise ``ValueError``."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)


def build_configured(
    builder: Callable[[Any, int, bool], nn.Module],
    cfg: Any,
    num_classes: int,
    image_size: int | None = None,
    pretrained: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Apply ``image_size`` and ``overrides`` to the preset ``cfg`` (its ``replace`` rejects
    unknown keys), check its ``DetectorOptions`` (``distill.models.options``), build with
    ``builder(cfg, num_classes, pretrained)``, switch it to GroupNorm + WS for ``norm: gn_ws``,
    set every BatchNorm's momentum when ``cfg.bn_momentum`` is set, and keep the config on
    ``model.config``."""
    if image_size is not None:
        overrides["image_size"] = int(image_size)
    cfg = validate_options(cfg.replace(**overrides), pretrained)
    model = builder(cfg, num_classes, pretrained)
    if cfg.norm == "gn_ws":
        convert_gn_ws(model)
    if cfg.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg.bn_momentum
    model.config = cfg
    return model


def _load_presets() -> None:
    """Import the packages whose import registers presets (lazily, to avoid import cycles)."""
    import students  # noqa: F401

    from . import efficientdet  # noqa: F401

    if importlib.util.find_spec("teachers") is not None:
        importlib.import_module("teachers")


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    _load_presets()
    return sorted(_BUILDERS)


def _lookup(name: str) -> str:
    _load_presets()
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(_BUILDERS))}")
    return name


def model_description(name: str) -> str:
    """One-line description of a registered model."""
    return _DESCRIPTIONS[_lookup(name)]


def build_model(
    name: str,
    num_classes: int,
    image_size: int | None = None,
    pretrained: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build the registered model ``name`` (a ``Detector``); ``overrides`` go to its builder."""
    fn = _BUILDERS[_lookup(name)]
    return fn(num_classes=num_classes, image_size=image_size, pretrained=pretrained, **overrides)
