"""Options every detector family takes (``model.options``): light head levels and the norm.

- ``light_levels``: pyramid levels (3 = P3, stride 8, ...) whose head tower convolutions are
  replaced by lightweight blocks (``distill.models.light``), as Light-Weight RetinaNet does for
  P3, the level that holds most of a head's FLOPs. The predictor stays shared by all levels.
- ``light_depth``: how many of a light level's tower convs (the first ones) become light blocks;
  ``null``, the default: all of them. Fewer give the finer steps of the light line (one of
  RetinaNet's four P3 convs is about a tenth of its FLOPs).
- ``light_block``: ``grouped`` (the head's own conv with its channel mixing split into groups)
  or ``separable`` (a dense 3x3 conv factored into depthwise 3x3 + pointwise 1x1; only for heads
  of dense convs, i.e. the RetinaNet-style ``ConvHead``: EfficientDet's head is separable
  already).
- ``norm``: ``bn`` (BatchNorm, the default) or ``gn_ws`` (GroupNorm + Weight Standardization,
  ``distill.models.norms``) for students trained from scratch.

Bad values raise ``distill.config.RecipeError`` naming the key and the valid values when the
model is built (``distill check`` / ``train`` build it on the meta device before any work).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from distill.errors import RecipeError

LIGHT_BLOCKS: tuple[str, ...] = ("grouped", "separable")
NORMS: tuple[str, ...] = ("bn", "gn_ws")


@dataclass(kw_only=True)
class DetectorOptions:
    """The shared ``model.options`` keys; model config dataclasses inherit them (keyword-only,
    so they follow each family's own fields)."""

    light_levels: tuple[int, ...] = ()  # pyramid levels with light head convs, e.g. (3,)
    light_depth: Optional[int] = None  # light convs per light level, the first ones (None: all)
    light_block: str = "grouped"  # grouped | separable
    norm: str = "bn"  # bn | gn_ws


def option_error(key: str, message: str) -> ValueError:
    """A ``RecipeError`` about ``model.options.<key>``."""
    return RecipeError(f"model.options.{key}: {message}")


def _as_levels(value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) else value
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise option_error("light_levels", f"{value!r} is not a list of pyramid levels, e.g. [3]")
    levels = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise option_error("light_levels", f"{item!r} is not a pyramid level (an integer "
                                               "such as 3 for P3)")
        levels.append(int(item))
    return tuple(sorted(set(levels)))


def validate_options(cfg: Any, pretrained: bool = False) -> Any:
    """``cfg`` with its options checked and ``light_levels`` as a sorted tuple of ints."""
    if cfg.light_block not in LIGHT_BLOCKS:
        raise option_error("light_block", f"unknown value {cfg.light_block!r}; valid: "
                                          f"{', '.join(LIGHT_BLOCKS)}")
    depth = cfg.light_depth
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise option_error("light_depth", f"{depth!r} is not a positive number of tower convs "
                                          "(null: all of them)")
    if cfg.norm not in NORMS:
        raise option_error("norm", f"unknown value {cfg.norm!r}; valid: {', '.join(NORMS)}")
    if cfg.norm == "gn_ws" and (pretrained or getattr(cfg, "backbone_weights", None)):
        raise option_error("norm", "gn_ws is for students trained from scratch: pretrained "
                                   "backbone weights carry BatchNorm statistics; use norm: bn")
    return dataclasses.replace(cfg, light_levels=_as_levels(cfg.light_levels))


def pyramid_level(stride: int) -> int:
    """The pyramid level of a stride (8 -> 3 for P3)."""
    return int(round(math.log2(stride)))


def light_positions(light_levels: Sequence[int], strides: Sequence[int]) -> list[int]:
    """Indices into ``strides`` of the ``light_levels``; an error names the levels the model has."""
    levels = [pyramid_level(s) for s in strides]
    missing = [lvl for lvl in light_levels if lvl not in levels]
    if missing:
        raise option_error("light_levels", f"{missing} not among this model's pyramid levels; "
                                           f"valid: {levels}")
    return [levels.index(lvl) for lvl in light_levels]


def light_layers(light_depth: int | None, tower_depth: int) -> int:
    """How many tower convs of a light level are light: ``light_depth`` (None: all), checked
    against the head's ``tower_depth``."""
    if light_depth is None:
        return tower_depth
    if light_depth > tower_depth:
        raise option_error("light_depth", f"{light_depth} is more than this head's {tower_depth} "
                                          f"tower convs; valid: 1..{tower_depth} or null (all)")
    return light_depth


def check_light_block(kind: str, separable_head: bool, light: Sequence[int]) -> None:
    """Reject ``separable`` light levels on a head whose convs are depthwise-separable already."""
    if light and separable_head and kind == "separable":
        raise option_error("light_block", "'separable' changes nothing on this head, whose "
                                          "convolutions are depthwise-separable already "
                                          "(EfficientDet); valid here: grouped")
