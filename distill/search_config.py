"""The ``search:`` section of a recipe: `distill search` settings (the schema only).

The zero-shot level (MAE-NAS, the default) scores backbone structures without data; the
trained levels (SM-NAS: ``--level structural`` and ``--level modular``) train every candidate
detector briefly. Kept apart from ``distill.config`` to keep that file short; ``Recipe.search``
is a ``SearchConfig``. Plain dataclasses that import nothing of the search: the search package
checks the values against its space (``distill.search.checks``, run by ``load_recipe`` as a
``RECIPE_CHECKS`` entry) and builds its spaces from these sections (``SearchSpace`` and
``StructuralSpace`` extend ``SearchSpaceConfig`` and ``StructuralSpaceConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

SCORES: tuple[str, ...] = ("entropy", "closed_form")


@dataclass
class SearchSpaceConfig:
    """``search.space``: what a structure may look like and how a mutation changes it
    (REFERENCE section 3; ``distill.search.space.SearchSpace`` adds the rules)."""

    stage_strides: list[int] = field(default_factory=lambda: [2, 2, 2, 1, 2])  # after the stem
    block_kinds: list[str] = field(default_factory=lambda: ["k1kx", "kxkx"])  # BLOCK_TYPES keys
    kernels: list[int] = field(default_factory=lambda: [3, 5])  # odd kernel sizes
    # a width mutation multiplies a stage's (or bottleneck's) width by one of these
    width_scales: list[float] = field(default_factory=lambda: [2.0, 1.5, 1.25, 0.8, 0.6, 0.5])
    depth_steps: list[int] = field(default_factory=lambda: [-2, -1, 1, 2])  # depth mutation
    channel_multiple: int = 8  # every width is a multiple of this
    min_width: int = 8
    max_width: int = 1024
    max_stem_width: int = 64
    max_depth: int = 10  # residual units per stage
    min_bottleneck_ratio: float = 0.1  # bottleneck >= out * ratio (and <= out)
    # what a mutation may change: width | bottleneck | depth | kernel | class
    mutations: list[str] = field(
        default_factory=lambda: ["width", "bottleneck", "depth", "kernel", "class"]
    )


@dataclass
class StructuralSpaceConfig:
    """``search.structural``: the values each gene of `distill search --level structural` may
    take (``distill.search.structural.StructuralSpace`` adds sampling and mutation). A searched
    structure is a backbone too: a ``maenas_*`` preset name or a ``structure.json`` path."""

    backbones: list[str] = field(default_factory=lambda: [
        "tinynet_e", "tinynet_d", "tinynet_c", "tinynet_b", "tinynet_a", "efficientnet_b0",
        "mobilenetv3_small_075", "mobilenetv3_small_100", "mobilenetv3_large_100",
        "resnet18", "resnet34", "maenas_dm3", "maenas_dm2", "maenas_dm1"])
    necks: list[str] = field(default_factory=lambda: ["bifpn", "fpn", "repgfpn"])
    neck_widths: list[int] = field(default_factory=lambda: [16, 24, 32, 48, 64])
    neck_depths: list[int] = field(default_factory=lambda: [1, 2, 3])  # bifpn cells, RepBlocks
    max_levels: list[int] = field(default_factory=lambda: [5, 6, 7])  # P3-P5, P3-P6, P3-P7
    head_depths: list[int] = field(default_factory=lambda: [1, 2, 3])
    head_widths: list[int] = field(default_factory=lambda: [16, 24, 32, 48, 64])  # conv heads
    image_sizes: list[int] = field(default_factory=lambda: [128, 256])  # multiples of 128


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
    against FLOPs. Null lists: SM-NAS's sets scaled to the member (distill/search/modular.py)."""

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
    # what a structure may look like
    space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
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
    structural: StructuralSpaceConfig = field(default_factory=StructuralSpaceConfig)
    modular: ModularConfig = field(default_factory=ModularConfig)
