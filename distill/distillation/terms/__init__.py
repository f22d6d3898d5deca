"""Distillation terms: one file per kind, registered in ``TERMS`` (importing this package
registers the built-in kinds)."""

from distill.distillation.terms import (  # noqa: F401  (each registers its kind)
    crosskd,
    feature,
    localization,
    prediction,
)
from distill.distillation.terms.base import (
    BuildContext,
    DistillTerm,
    TermConfig,
    TermInputs,
    TermWeight,
    build_terms,
    paired_levels,
    resolve_terms,
)

__all__ = [
    "BuildContext",
    "DistillTerm",
    "TermConfig",
    "TermInputs",
    "TermWeight",
    "build_terms",
    "paired_levels",
    "resolve_terms",
]
