"""``Registry``: a named table filled by decorators and, lazily, by the package entry points.

A leaf module (it imports nothing of the project). Every extension point is one ``Registry``:
models, data formats, distillation term kinds and losses. A plug-in registers with the
decorator; a registry with an ``entry_point_group`` also imports the modules that installed
packages name in that group (``[project.entry-points."distill.models"]`` in a
``pyproject.toml``) the first time a name is looked up, and once more when a name is missing,
so a user's own pip package adds a family without any import in this project::

    from distill.models import MODELS

    @MODELS.register("my_detector")
    def my_detector(num_classes, image_size=None, pretrained=False, **overrides): ...
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any


class Registry:
    """A named table of classes or functions, filled by the ``register`` decorator."""

    def __init__(self, what: str, entry_point_group: str | None = None,
                 installed_by: str | None = None) -> None:
        self.what = what
        self.entry_point_group = entry_point_group
        # the distribution whose own entry points fill the group (e.g. "distill-det"): when the
        # group is empty that package is not installed, and a registry missing its built-ins
        # (e.g. the recipe checks) would pass what it should refuse, so it stops instead
        self.installed_by = installed_by
        self._entries: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._loaded_plugins: set[str] = set()

    def register(self, name: str, description: str = "") -> Callable[[Any], Any]:
        """Decorator: register the decorated object under ``name`` (names are unique)."""

        def wrap(obj: Any) -> Any:
            self.add(name, obj, description)
            return obj

        return wrap

    def add(self, name: str, obj: Any, description: str = "") -> None:
        """Register ``obj`` under ``name``; registering the same object again is a no-op."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = obj
        doc = description or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
        self._descriptions[name] = doc

    def load_plugins(self) -> None:
        """Import the modules named in this registry's entry-point group (each once)."""
        if self.entry_point_group is None:
            return
        entries = importlib.metadata.entry_points(group=self.entry_point_group)
        if self.installed_by and not entries:
            raise ImportError(
                f"no {self.entry_point_group} entry points: the {self.what}s of "
                f"{self.installed_by} are registered by its installed metadata; install it "
                f"(pip install -e . in its checkout) rather than importing it from a path")
        for entry in entries:
            key = f"{entry.name}={entry.value}"
            if key in self._loaded_plugins:
                continue
            self._loaded_plugins.add(key)
            try:
                entry.load()
            except Exception as exc:  # a broken plug-in is named, not a bare traceback
                raise ImportError(
                    f"the {self.entry_point_group} plug-in {entry.name!r} ({entry.value}) "
                    f"failed to import: {exc}"
                ) from exc

    def get(self, name: str) -> Any:
        """The object registered as ``name``; ``ValueError`` listing the valid names otherwise."""
        if name not in self._entries:
            self.load_plugins()
        if name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def description(self, name: str) -> str:
        """The one-line description of ``name`` (its docstring's first line unless given)."""
        self.get(name)
        return self._descriptions[name]

    def names(self) -> list[str]:
        """Sorted registered names (plug-ins loaded first)."""
        self.load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
