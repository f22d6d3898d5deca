"""The measured default terms, and what `distill check` says of a recipe's terms against them.

Chosen in issue 26 on one tuning budget for every method (docs/BENCHMARKS.md, "One tuning budget
for every method"): the best mean gap closed over the embedded data, BCCD and Aquarium on the
EfficientDet pair, with a neck-feature term, so it works for any pair with pyramid levels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from distill.config import DistillConfig
from distill.distillation.terms import resolve_terms

MEASURED_DEFAULT: list[dict[str, Any]] = [
    {"kind": "feature", "loss": "fgd",
     "weight": {"schedule": "auto", "target": 128.0, "start": 1.0, "end": 0.1}},
    {"kind": "prediction",
     "weight": {"schedule": "auto", "target": 16.0, "start": 1.0, "end": 1.0}},
]
WHAT_IT_GAVE = ("FGD on the neck features at 128x the detection loss decaying to a tenth + "
                "prediction KD at 16x, which closed 57% of the teacher-baseline gap on average "
                "over three datasets with EfficientDet pairs (docs/BENCHMARKS.md)")


def terms_note(cfg: DistillConfig) -> str:
    """One line on a recipe's ``distill`` section's terms against ``MEASURED_DEFAULT``, compared
    as resolved terms (so keys left to their defaults, or 16 for 16.0, do not count as other)."""
    if not cfg.terms:
        return (f"terms: none set, so one {cfg.loss} feature term from the distill section; the "
                f"measured default is {WHAT_IT_GAVE}")
    default = resolve_terms(dataclasses.replace(cfg, terms=MEASURED_DEFAULT))
    if resolve_terms(cfg) == default:
        return f"terms: the measured default, {WHAT_IT_GAVE}"
    return f"terms: the recipe's own; the measured default, for comparison, is {WHAT_IT_GAVE}"
