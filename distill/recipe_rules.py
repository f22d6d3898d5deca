"""Rules a recipe's values follow beyond their types, checked when a recipe is loaded: numeric
limits (``LIMITS``), finite numbers, ``trainer.devices``, and where a recipe file's relative
input paths point. Plain values and omegaconf only: no torch (the schema layer's contract)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from distill.errors import RecipeError

_AT_LEAST_1, _AT_LEAST_0 = (lambda v: v >= 1, "a positive number"), (lambda v: v >= 0, ">= 0")
_FRACTION = (lambda v: 0 < v < 1, "a fraction in (0, 1)")
_PROBABILITY = (lambda v: 0 <= v <= 1, "a probability in [0, 1]")
# numeric keys and what they must be (null values of optional keys are not checked)
LIMITS: dict[str, tuple[Any, str]] = {
    "trainer.epochs": _AT_LEAST_1,
    "trainer.max_steps": (lambda v: v == -1 or v >= 1, "-1 (epochs decide) or a positive number"),
    "trainer.num_nodes": _AT_LEAST_1,
    "trainer.val_every": _AT_LEAST_1,
    "trainer.log_every": _AT_LEAST_1,
    "trainer.grad_clip": _AT_LEAST_0,
    "trainer.checkpoint_every_steps": (lambda v: v >= 0,
                                       "0 (epoch ends only) or a positive number of steps"),
    "trainer.limit_val_batches": (
        lambda v: v > 0 and (v <= 1 or float(v).is_integer()),
        "a fraction in (0, 1] or a whole number of batches (validation measures the run: it "
        "cannot be 0)"),
    "data.augment.hflip": _PROBABILITY,
    "data.augment.mosaic": _PROBABILITY,
    "data.augment.mixup": _PROBABILITY,
    "data.augment.color_jitter": _AT_LEAST_0,
    "model.image_size": _AT_LEAST_1,
    "teacher.model.image_size": _AT_LEAST_1,
    "data.batch_size": _AT_LEAST_1,
    "data.val_batch_size": _AT_LEAST_1,
    "data.num_workers": _AT_LEAST_0,
    "data.max_train_images": _AT_LEAST_1,
    "data.max_val_images": _AT_LEAST_1,
    "data.val_fraction": _FRACTION,
    "optim.lr": (lambda v: v > 0, "a positive learning rate"),
    "optim.weight_decay": _AT_LEAST_0,
    "optim.warmup_epochs": _AT_LEAST_0,
    "optim.ema_decay": (lambda v: 0 <= v < 1, "0 (off) or a decay in (0, 1)"),
    "optim.freeze_bn_at": _FRACTION,
    "teacher.epochs": _AT_LEAST_1,
    "teacher.lr": (lambda v: v > 0, "a positive learning rate"),
    "distill.latency_runs": _AT_LEAST_1,
}


def check_limits(recipe: DictConfig, source: str) -> None:
    for key, (ok, expected) in LIMITS.items():
        value = OmegaConf.select(recipe, key)
        if value is not None and not ok(value):
            raise RecipeError(f"{source}: '{key}' is {value}, expected {expected}")


def check_finite(values: Any, source: str, prefix: str = "") -> None:
    """Raise RecipeError for the first number in ``values`` that is NaN or infinite."""
    items = (values.items() if isinstance(values, dict)
             else enumerate(values) if isinstance(values, list) else ())
    for key, value in items:
        dot = "." if prefix else ""
        path = f"{prefix}[{key}]" if isinstance(values, list) else f"{prefix}{dot}{key}"
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{source}: '{path}' is {value}, expected a finite number")
        check_finite(value, source, path)


# input paths a recipe file may give relative to its own folder
INPUT_PATHS: tuple[tuple[str, ...], ...] = (
    ("data", "root"), ("teacher", "checkpoint"), ("model", "backbone_weights"),
    ("teacher", "model", "backbone_weights"))


def _beside(value: Any, folder: Path) -> Any:
    """``value`` (a path, ``${oc.env:...}`` resolved) as ``folder / value`` when it is relative
    and something exists there; else unchanged (relative to the current folder)."""
    if not isinstance(value, str) or not value:
        return value
    text = value
    if "${" in value:
        try:
            text = OmegaConf.to_container(OmegaConf.create({"v": value}), resolve=True)["v"]
        except OmegaConfBaseException:
            return value  # refers to other keys: left to the merged recipe
    if not isinstance(text, str) or os.path.isabs(text) or not (folder / text).exists():
        return value
    return os.path.normpath(folder.absolute() / text)


def paths_beside(values: dict, folder: Path) -> None:
    """Relative input paths of one recipe file (``INPUT_PATHS``, the chain's checkpoints) are
    read beside that file when they exist there, as ``base:`` is; so ``distill data
    path/to/recipe.yaml`` works from any folder. Outputs (``output_dir``, a dataset still to be
    generated) and command-line values stay relative to the current folder."""
    for keys in INPUT_PATHS:
        node = values
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = _beside(node[keys[-1]], folder)
    chain = values.get("distill", {}).get("chain") if isinstance(values.get("distill"), dict) \
        else None
    for entry in chain if isinstance(chain, list) else []:
        if isinstance(entry, dict) and "checkpoint" in entry:
            entry["checkpoint"] = _beside(entry["checkpoint"], folder)


def check_devices(devices: Any, source: str) -> None:
    """``trainer.devices``: a positive count, -1 / "auto", or a list of distinct device ids."""
    ids = list(devices) if isinstance(devices, (list, tuple, ListConfig)) else None
    if ids is not None:
        ok = bool(ids) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                               for i in ids) and len(set(ids)) == len(ids)
    else:
        ok = devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool)
                                   and (devices >= 1 or devices == -1))
    if not ok:
        raise RecipeError(f"{source}: 'trainer.devices' is {devices!r}, expected a count (2), "
                          "-1 or auto (every visible device), or a list of device ids ([0, 2])")


