"""Reading checkpoints safely and loading them strictly, with every mismatch named; the one
owner of the detector checkpoint schema (written and read here).

A detector checkpoint is ``{"state_dict": {"model." + key: tensor}, "hyper_parameters": ...}``
with ``hyper_parameters`` either ``{"recipe": {..., "model": {...}}, "class_names": [...]}``
(``distill train`` / ``distill run``, the exported ``student.ckpt``) or ``{"model": {...},
"num_classes": K, ...}`` (``distill import-effdet``). Stage checkpoints of a distillation also
hold ``distiller.*`` weights, which a detector does not use.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.errors import RecipeError
from distill.io import save_torch_atomic

MODEL_PREFIX = "model."  # the detector's weights in a checkpoint's state_dict
DISTILLER_PREFIX = "distiller."  # a distillation stage's align modules (not the detector's)


def load_weights_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        code = next((line for line in lines if "GLOBAL" in line), None)
        if isinstance(err, pickle.UnpicklingError) and code:
            raise RecipeError(
                f"{path}: not a loadable checkpoint: refused, the file holds Python objects "
                f"other than tensors and plain values ({code}); it is read with "
                "weights_only=True, so none of its code ran"
            ) from err
        detail = lines[-2] if len(lines) > 2 and "documentation" in lines[-1] else (
            lines[0] if lines else type(err).__name__)
        raise RecipeError(f"{path}: not a loadable checkpoint (truncated, or not a file torch.save "
                          f"wrote): {type(err).__name__}: {detail}") from err


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint with ``weights_only=True``; a clear error if it is not one."""
    path = Path(path)
    checkpoint = load_weights_file(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RecipeError(f"{path}: no 'state_dict' in the file; expected a `distill` checkpoint")
    return checkpoint


def check_state_fits(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str = "the model"
) -> None:
    """Raise ``RecipeError`` listing the missing, unexpected and mis-shaped keys, if any."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: {tuple(getattr(state[k], 'shape', ()))} in file, {tuple(own[k].shape)} in model"
        for k in own
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                )
                parts.append(f"{label}: {shown}")
        raise RecipeError(f"{source}: does not fit {what}; " + "; ".join(parts))


def load_state_strict(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str = "the model"
) -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key stops with a list.

    Nothing is loaded unless everything fits.
    """
    check_state_fits(module, state, source, what)
    module.load_state_dict(state, strict=True)


def saved_class_names(checkpoint: dict[str, Any]) -> list[str] | None:
    """The class names a checkpoint was trained on; None where it saved none (or only a
    count, as ``distill import-effdet`` does)."""
    hparams = checkpoint.get("hyper_parameters")
    names = hparams.get("class_names") if isinstance(hparams, dict) else None
    return [str(n) for n in names] if isinstance(names, (list, tuple)) and names else None


def check_class_names(saved: list[str] | None, used: list[str], source: str | Path,
                      used_by: str) -> None:
    """Refuse a checkpoint trained on other classes (or the same in another order) than
    ``used`` (what ``used_by`` gives), naming both lists; nothing to compare when ``saved`` is
    None."""
    if saved is None or list(saved) == list(used):
        return
    order = " (the same names in another order)" if sorted(saved) == sorted(used) else ""
    raise RecipeError(
        f"{source}: trained on the classes {list(saved)}, but {used_by} has {list(used)}"
        f"{order}; class i of the model would be read as class i of the data, so every number "
        "would be wrong. Use the checkpoint with data of its classes, or set the class list "
        "(data.classes) in the checkpoint's order")


@dataclass
class DetectorCheckpoint:
    """What a detector checkpoint holds: the recipe's ``model`` section it was built from, the
    class names (``class_<i>`` where only a count is saved) and the detector's own weights."""

    model: dict[str, Any]
    class_names: list[str]
    state: dict[str, torch.Tensor]


def detector_settings(hparams: Any, source: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The model section and class names of a checkpoint's ``hyper_parameters``."""
    if isinstance(hparams, dict) and isinstance(hparams.get("recipe"), dict):
        model_cfg, names = hparams["recipe"].get("model"), hparams.get("class_names")
        if isinstance(model_cfg, dict) and isinstance(names, (list, tuple)) and names:
            return dict(model_cfg), [str(n) for n in names]
    if isinstance(hparams, dict) and isinstance(hparams.get("model"), dict) \
            and isinstance(hparams.get("num_classes"), int):  # distill import-effdet
        return dict(hparams["model"]), [f"class_{i}" for i in range(hparams["num_classes"])]
    raise RecipeError(
        f"{source}: not a detector checkpoint: its hyper_parameters hold no recipe 'model' section "
        "and 'class_names'; expected a checkpoint written by `distill train`, `distill run` or "
        "`distill import-effdet`")


def detector_state(state: dict[str, Any], source: str | Path) -> dict[str, torch.Tensor]:
    """The detector's weights (``model.*`` keys, prefix removed); ``distiller.*`` are dropped."""
    others = [k for k in state if not k.startswith((MODEL_PREFIX, DISTILLER_PREFIX))]
    if others or not any(k.startswith(MODEL_PREFIX) for k in state):
        shown = ", ".join(others[:5]) or "none"
        raise RecipeError(f"{source}: not a detector checkpoint: expected 'model.*' weights in its "
                          f"state_dict (other keys: {shown})")
    return {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}


def read_detector_checkpoint(path: str | os.PathLike) -> DetectorCheckpoint:
    """Read a detector checkpoint (weights only) into its model section, classes and weights."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    model_cfg, class_names = detector_settings(checkpoint.get("hyper_parameters"), path)
    state = detector_state(checkpoint["state_dict"], path)
    return DetectorCheckpoint(model_cfg, class_names, state)


def write_detector_checkpoint(
    path: str | os.PathLike, state: dict[str, torch.Tensor], hyper_parameters: dict[str, Any]
) -> Path:
    """Save a detector's own ``state`` (keys without prefix) and its ``hyper_parameters`` (one of
    the two forms above, checked first) atomically at ``path``."""
    detector_settings(hyper_parameters, path)  # never write a file the reader refuses
    checkpoint = {"state_dict": {f"{MODEL_PREFIX}{k}": v for k, v in state.items()},
                  "hyper_parameters": hyper_parameters}
    return save_torch_atomic(checkpoint, path)
