"""The model registry: name -> detector builder, filled by families through entry points.

``distill`` imports no family package: the built-in families (``distill.models.efficientdet``,
``students``, ``teachers``) and any user package name a module in the ``distill.models``
entry-point group of their ``pyproject.toml``::

    [project.entry-points."distill.models"]
    my_family = "my_package.my_family"

and that module registers its builders when the registry first looks a name up. A builder is
``fn(num_classes, image_size=None, pretrained=False, **overrides) -> Detector``;
``register_preset(name, builder, cfg)`` makes one from a family's ``builder(cfg, num_classes,
pretrained)`` and a preset config.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from distill.registry import Registry

from .norms import convert_gn_ws
from .options import validate_options

MODELS = Registry("model", entry_point_group="distill.models", installed_by="distill-det")

FamilyBuilder = Callable[[Any, int, bool], nn.Module]


def register_model(name: str, description: str = "") -> Callable:
    """Decorator registering ``fn(num_classes, image_size=None, pretrained=False, **overrides)``."""
    return MODELS.register(name, description)


def replace_config(cfg: Any, **overrides: Any) -> Any:
    """A copy of the dataclass ``cfg`` with ``overrides``; unknown keys raise ``ValueError``."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)


def build_configured(
    builder: FamilyBuilder,
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


def register_preset(name: str, builder: FamilyBuilder, cfg: Any, description: str = "") -> None:
    """Register the preset ``cfg`` of a family as ``name``: building it applies the recipe's
    image size and overrides to ``cfg`` and calls ``builder`` (``build_configured``)."""
    MODELS.add(name, functools.partial(build_configured, builder, cfg), description)


def list_models() -> list[str]:
    """Sorted names of all registered models (every installed family's)."""
    return MODELS.names()


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS.names())}")
    return MODELS.get(name)


def model_description(name: str) -> str:
    """One-line description of a registered model."""
    _lookup(name)
    return MODELS.description(name)


def build_model(
    name: str,
    num_classes: int,
    image_size: int | None = None,
    pretrained: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build the registered model ``name`` (a ``Detector``); ``overrides`` go to its builder."""
    return _lookup(name)(num_classes=num_classes, image_size=image_size, pretrained=pretrained,
                         **overrides)
