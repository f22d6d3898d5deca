"""The ``search:`` section of a recipe: `distill search` settings.

The zero-shot level (MAE-NAS, the default) scores backbone structures without data; the
trained levels (SM-NAS: ``--level structural`` and ``--level modular``) train every candidate
detector briefly. Kept apart from ``distill.config`` to keep that file short; ``Recipe.search``
is a ``SearchConfig``. ``search_problems`` lists what is wrong with one (checked by
``load_recipe``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from students.nas.space import SearchSpace
from students.nas.structural import GENE_LISTS, MAX_LEVELS, NECKS, StructuralSpace

SCORES: tuple[str, ...] = ("entropy", "closed_form")
MUTATIONS: tuple[str, ...] = ("width", "bottleneck", "depth", "kernel", "class")
METRICS: tuple[str, ...] = ("map", "map_50")  # the trained levels' accuracy proxy
COSTS: tuple[str, ...] = ("latency_ms", "macs")  # the structural level's cost
NORMS: tuple[str, ...] = ("bn", "gn_ws")


@dataclass
class BudgetConfig:
    """Upper bounds (null: no limit). Zero-shot: of the searched backbone at
    ``search.image_size``, latency from the latency table. Structural and modular: of the whole
    detector at its own input size, latency measured end to end (``layers`` not used)."""

    params: Optional[float] = None  # parameters (convs and BatchNorms), e.g. 2e6
    macs: Optional[float] = None  # multiply-adds of one image, e.g. 4e8 (0.4 GMACs)
    layers: Optional[int] = None  # convs on the main paths (stem included, shortcuts not)
    # milliseconds from the latency table (batch 1); needs `distill search RECIPE --profile`
    latency_ms: Optional[float] = None


@dataclass
class ModularConfig:
    """`distill search --level modular --member K`: around front member K of the structural
    search, the backbone's channel plan (searched backbones) and the neck and head widths,
    against FLOPs. Null lists: SM-NAS's sets scaled to the member (students/nas/modular.py)."""

    initial_widths: Optional[list[int]] = None  # the plan's initial width (SM-NAS: 48..72)
    neck_widths: Optional[list[int]] = None  # SM-NAS: {128, 256, 512}
    head_widths: Optional[list[int]] = None  # conv heads (fpn, repgfpn); bifpn's follow the neck
    max_depth: int = 10  # units per stage in a plan
    norm: str = "gn_ws"  # model.options.norm of every candidate: gn_ws (SM-NAS) | bn
    flops_ratio: float = 1.0  # FLOPs budget: the member's FLOPs times this


@dataclass
class SearchConfig:
    """`distill search`: zero-shot (MAE-NAS) evolutionary search of a backbone structure, or
    (``--level structural`` / ``modular``) SM-NAS's search of trained candidate detectors."""

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
    # --- structural and modular levels (each candidate trained briefly) ---
    evaluations: int = 100  # candidates trained (new, within the budget)
    train_steps: int = 150  # optimizer steps per candidate; same seed and data order for all
    val_batches: Optional[int] = None  # validation batches of the accuracy proxy (null: all)
    metric: str = "map"  # accuracy proxy: map | map_50 (validation, after the short training)
    cost: str = "latency_ms"  # structural front and selection: latency_ms (measured) | macs
    latency_runs: int = 10  # timed forward passes per candidate (batch 1, after 3 warm-up)
    trained_population: int = 12  # members kept for breeding (Pareto rank, then accuracy)
    random_initial: int = 8  # random candidates trained before evolution starts
    crossover: float = 0.5  # share of children bred by crossover of two parents (then mutated)
    references: list[str] = field(default_factory=list)  # presets trained the same way, for
    # comparison in front.json / front.png (e.g. efficientdet_dm3)
    structural: StructuralSpace = field(default_factory=StructuralSpace)
    modular: ModularConfig = field(default_factory=ModularConfig)


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
