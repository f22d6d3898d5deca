"""Reading checkpoints safely and loading them strictly, with every mismatch named."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.errors import RecipeError


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
