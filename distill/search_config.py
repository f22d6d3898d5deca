"""The ``search:`` section of a recipe: `distill search` (MAE-NAS evolutionary search) settings.

Kept apart from ``distill.config`` to keep that file short; ``Recipe.search`` is a
``SearchConfig``. ``search_problems`` lists what is wrong with one (checked by ``load_recipe``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from students.nas.space import SearchSpace

SCORES: tuple[str, ...] = ("entropy", "closed_form")
MUTATIONS: tuple[str, ...] = ("width", "bottleneck", "depth", "kernel", "class")


@dataclass
class BudgetConfig:
    """Upper bounds for the searched backbone (null: no limit), at ``search.image_size``."""

    params: Optional[float] = None  # parameters (convs and BatchNorms), e.g. 2e6
    macs: Optional[float] = None  # multiply-adds of one image, e.g. 4e8 (0.4 GMACs)
    layers: Optional[int] = None  # convs on the main paths (stem included, shortcuts not)
    # milliseconds from the latency table (batch 1); needs `distill search RECIPE --profile`
    latency_ms: Optional[float] = None


@dataclass
class SearchConfig:
    """`distill search`: zero-shot (MAE-NAS) evolutionary search of a backbone structure."""

    budget: BudgetConfig = field(default_factory=BudgetConfig)
    space: SearchSpace = field(default_factory=SearchSpace)  # what a structure may look like
    image_size: int = 320  # detector input side the multiply-add and latency budgets refer to
    population: int = 256  # structures kept (best scores)
    candidates: int = 2000  # mutated structures to score (budget-passing, new ones only)
    seed: int = 0  # same seed, same recipe: same structure
    score: str = "entropy"  # entropy (Gaussian-noise forward pass) | closed_form (no forward)
    stage_weights: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0, 1.0, 6.0])
    score_image_size: int = 160  # entropy score: noise image side
    score_batch: int = 2  # entropy score: noise images per forward pass
    repeats: int = 2  # entropy score: forward passes averaged
    # starting structure: [stem, stage 1, ..., stage N] output widths (depth 1, bottleneck half)
    initial: list[int] = field(default_factory=lambda: [16, 24, 40, 64, 96, 160])
    # latency table JSON; null: <output_dir>/latency/<cpu|cuda>-<image_size>.json if present
    latency_table: Optional[str] = None
    checkpoint_every: int = 100  # save population.json every N candidates (and at the end)
    output: Optional[str] = None  # results folder; null: <output_dir>/<name>/search


def _positive(value: float | None) -> bool:
    return value is not None and not isinstance(value, bool) and math.isfinite(value) and value > 0


def search_problems(cfg: SearchConfig) -> list[str]:
    """Every problem of ``cfg`` as ``'search.<key>' ...`` messages (empty when it is usable)."""
    from students.nas.space import BLOCK_TYPES  # no torch: a cheap import

    found: list[str] = []
    for key in ("params", "macs", "layers", "latency_ms"):
        value = getattr(cfg.budget, key)
        low = 0 if key == "latency_ms" else 1
        if value is not None and not (_positive(value) and value >= low):
            found.append(f"'search.budget.{key}' is {value}, expected a positive number "
                         "(null: no limit)")
    space = cfg.space
    stages = len(space.stage_strides)
    if not stages or any(s not in (1, 2) for s in space.stage_strides):
        found.append(f"'search.space.stage_strides' is {space.stage_strides}, expected a "
                     "non-empty list of 1s and 2s")
    bad = [k for k in space.block_kinds if k not in BLOCK_TYPES]
    if bad or not space.block_kinds:
        found.append(f"'search.space.block_kinds' is {space.block_kinds}, expected names "
                     f"from {', '.join(BLOCK_TYPES)}")
    if not space.kernels or any(k < 1 or k % 2 == 0 for k in space.kernels):
        found.append(f"'search.space.kernels' is {space.kernels}, expected odd sizes >= 1")
    if not space.width_scales or any(not _positive(s) for s in space.width_scales):
        found.append(f"'search.space.width_scales' is {space.width_scales}, expected "
                     "positive factors")
    bad = [m for m in space.mutations if m not in MUTATIONS]
    if bad or not space.mutations:
        found.append(f"'search.space.mutations' is {space.mutations}, expected names from "
                     f"{', '.join(MUTATIONS)}")
    for key in ("channel_multiple", "min_width", "max_width", "max_stem_width", "max_depth"):
        if not _positive(getattr(space, key)):
            found.append(f"'search.space.{key}' is {getattr(space, key)}, expected >= 1")
    if not 0 < space.min_bottleneck_ratio <= 1:
        found.append(f"'search.space.min_bottleneck_ratio' is {space.min_bottleneck_ratio}, "
                     "expected a fraction in (0, 1]")
    if len(cfg.stage_weights) != stages:
        found.append(f"'search.stage_weights' has {len(cfg.stage_weights)} values, expected "
                     f"one per stage of search.space.stage_strides ({stages})")
    if len(cfg.initial) != stages + 1:
        found.append(f"'search.initial' has {len(cfg.initial)} widths, expected the stem's "
                     f"and one per stage ({stages + 1})")
    if cfg.population < 2:
        found.append(f"'search.population' is {cfg.population}, expected >= 2")
    if cfg.candidates < 1:
        found.append(f"'search.candidates' is {cfg.candidates}, expected >= 1")
    for key in ("image_size", "score_image_size", "score_batch", "repeats", "checkpoint_every"):
        if getattr(cfg, key) < 1:
            found.append(f"'search.{key}' is {getattr(cfg, key)}, expected >= 1")
    return found
