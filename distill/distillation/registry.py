"""Name -> class registries for the distillation extension points (terms and losses).

A new term kind or loss is one file that defines a class and registers it::

    from distill.distillation.registry import FEATURE_LOSSES

    @FEATURE_LOSSES.register("my_loss")
    class MyLoss(nn.Module): ...

and one import line (in ``distill/distillation/__init__.py`` for the built-ins, or anywhere in
your own code before the recipe is loaded); no core module changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """A named table of classes (or functions), filled by the ``register`` decorator."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: register the decorated object under ``name`` (names are unique)."""

        def wrap(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> Any:
        """The object registered as ``name``; ``ValueError`` listing the valid names otherwise."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


FEATURE_LOSSES = Registry("feature loss")  # per-level nn.Module(channels, **options)
CLS_KD_LOSSES = Registry("class-score distillation loss")  # fn(student, teacher, tau, ...)
BOX_KD_LOSSES = Registry("box distillation loss")  # fn(student boxes, teacher boxes, weights)
TERMS = Registry("distillation term kind")  # DistillTerm subclasses with a Config dataclass
