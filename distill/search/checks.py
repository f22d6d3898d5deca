"""The recipe's ``search:`` section checked against the search space, when a recipe is loaded.

``distill.search_config`` holds the schema only (it imports nothing of the search); the values
that must name something of the space (block types, mutations, necks, pyramid levels, genes) and
the settings the search needs in range are checked here. ``check_search`` is registered in
``distill.config.RECIPE_CHECKS``, which this package names in the ``distill.recipe_checks``
entry-point group, so ``load_recipe`` runs it after its own validation and raises a
``RecipeError`` with the first problem. No torch: a cheap import.
"""

from __future__ import annotations

import math

from distill.config import RECIPE_CHECKS, Recipe
from distill.search_config import SearchConfig

from .space import BLOCK_TYPES, MUTATIONS
from .structural import GENE_LISTS, MAX_LEVELS, NECKS

METRICS: tuple[str, ...] = ("map", "map_50")  # the trained levels' accuracy proxy
COSTS: tuple[str, ...] = ("latency_ms", "macs")  # the structural level's cost
NORMS: tuple[str, ...] = ("bn", "gn_ws")  # search.modular.norm


@RECIPE_CHECKS.register("search")
def check_search(recipe: Recipe) -> list[str]:
    """The problems of the recipe's ``search:`` section (``search_problems``)."""
    return search_problems(recipe.search)


def _positive(value: float | None) -> bool:
    return value is not None and not isinstance(value, bool) and math.isfinite(value) and value > 0


def search_problems(cfg: SearchConfig) -> list[str]:
    """Every problem of ``cfg`` as ``'search.<key>' ...`` messages (empty when it is usable)."""
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
    return found + trained_problems(cfg)


def _choice(found: list[str], key: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        found.append(f"'{key}' is {value!r}, expected one of {', '.join(map(str, allowed))}")


def trained_problems(cfg: SearchConfig) -> list[str]:
    """Problems of the structural / modular settings, as ``'search.<key>' ...`` messages."""
    found: list[str] = []
    for key in ("evaluations", "train_steps", "latency_runs", "random_initial"):
        if getattr(cfg, key) < 1:
            found.append(f"'search.{key}' is {getattr(cfg, key)}, expected >= 1")
    if cfg.trained_population < 2:
        found.append(f"'search.trained_population' is {cfg.trained_population}, expected >= 2")
    if cfg.val_batches is not None and cfg.val_batches < 1:
        found.append(f"'search.val_batches' is {cfg.val_batches}, expected >= 1 or null")
    if not 0.0 <= cfg.crossover <= 1.0:
        found.append(f"'search.crossover' is {cfg.crossover}, expected a share in [0, 1]")
    _choice(found, "search.metric", cfg.metric, METRICS)
    _choice(found, "search.cost", cfg.cost, COSTS)
    space = cfg.structural
    for gene, key in GENE_LISTS.items():
        values = getattr(space, key)
        if not values:
            found.append(f"'search.structural.{key}' is empty, expected at least one value")
        elif gene not in ("backbone", "neck") and any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            found.append(f"'search.structural.{key}' is {values}, expected positive integers")
    bad = [n for n in space.necks if n not in NECKS]
    if bad:
        found.append(f"'search.structural.necks' has {bad}, expected names from "
                     f"{', '.join(NECKS)}")
    bad = [v for v in space.max_levels if v not in MAX_LEVELS]
    if bad:
        found.append(f"'search.structural.max_levels' has {bad}, expected values from "
                     f"{list(MAX_LEVELS)} (P3-P5, P3-P6, P3-P7)")
    bad = [v for v in space.image_sizes if isinstance(v, int) and v % 128]
    if bad:
        found.append(f"'search.structural.image_sizes' has {bad}, expected multiples of 128")
    mod = cfg.modular
    _choice(found, "search.modular.norm", mod.norm, NORMS)
    for key in ("initial_widths", "neck_widths", "head_widths"):
        values = getattr(mod, key)
        if values is not None and (not values or any(v < 1 for v in values)):
            found.append(f"'search.modular.{key}' is {values}, expected positive widths or "
                         "null (SM-NAS's, scaled to the member)")
    if mod.max_depth < 1:
        found.append(f"'search.modular.max_depth' is {mod.max_depth}, expected >= 1")
    if not _positive(mod.flops_ratio):
        found.append(f"'search.modular.flops_ratio' is {mod.flops_ratio}, expected > 0")
    return found
