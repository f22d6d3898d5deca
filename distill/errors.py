"""The project's error types, at the ground of the import graph (they import nothing)."""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe that cannot be used: the message names the file, the key and what was expected."""


class TrainingDiverged(RuntimeError):
    """A training run whose loss stopped being finite: the message names the step and the
    last good checkpoint."""
