"""Atomic file writes: text, JSON and ``torch.save`` go to a temporary file that is renamed into
place, so a kill leaves the previous file or the new one, never half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from distill.errors import RecipeError


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` next to ``path`` and rename it into place: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to a temporary file in the target folder, synced, then renamed to
    ``path``. A failed write is a ``RecipeError`` naming the file; the previous file stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise RecipeError(
            f"{path}: the checkpoint could not be written ({err.strerror or err}); the "
            "previous file, if any, is kept. Free disk space or choose another output_dir"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
