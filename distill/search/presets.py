"""Searched structures by name: the ``structure.json`` presets that installed packages ship.

A package names a folder of ``<preset>.json`` structures in the ``distill.structures`` entry-point
group (this project: ``students.nas.detector:STRUCTURES_DIR``, the ``maenas_*`` structures under
``students/structures/``)::

    [project.entry-points."distill.structures"]
    students = "students.nas.detector:STRUCTURES_DIR"

so the search (``--level structural`` backbones, the modular level's channel plans) and the
students resolve a preset name without the search importing a student module.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

ENTRY_POINT_GROUP = "distill.structures"


@functools.cache
def structure_dirs() -> tuple[Path, ...]:
    """The preset folders the ``distill.structures`` entry points name (loaded once)."""
    found = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            folder = entry.load()
        except Exception as exc:  # a broken plug-in is named, not a bare traceback
            raise ImportError(f"the {ENTRY_POINT_GROUP} plug-in {entry.name!r} ({entry.value}) "
                              f"failed to load: {exc}") from exc
        found.append(Path(folder))
    return tuple(found)


def structure_presets() -> list[str]:
    """Names of the structure presets (the ``*.json`` files of every preset folder)."""
    return sorted({path.stem for folder in structure_dirs() for path in folder.glob("*.json")})


def resolve_structure(structure: str | None) -> Path:
    """The structure file ``structure`` names: an existing path, else a preset."""
    if not structure:
        raise ValueError("model.options.structure: a searched student needs a structure.json "
                         f"path (`distill search`) or a preset name: {structure_presets()}")
    path = Path(structure)
    if path.is_file():
        return path
    for folder in structure_dirs():
        preset = folder / f"{structure}.json"
        if preset.is_file():
            return preset
    raise ValueError(f"model.options.structure: {structure!r} is neither a file nor a preset "
                     f"name; presets: {structure_presets()}")


def is_structure(backbone: str) -> bool:
    """Whether ``backbone`` names a searched structure (a preset or a JSON file), not timm."""
    return backbone.endswith(".json") or backbone in structure_presets()
