"""Recipes: YAML files read with omegaconf into a typed schema of dataclasses.

A recipe may name a ``base:`` recipe (a path relative to itself) whose values it overrides;
``key=value`` pairs from the command line override both. Unknown keys, values of the wrong type
and values outside a key's choices stop with a message naming the file, the key and what was
expected, before any work starts.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from distill.data.formats import check_data_section
from distill.data.settings import DataConfig, SyntheticConfig
from distill.errors import RecipeError
from distill.recipe_rules import check_devices, check_finite, check_limits, paths_beside
from distill.registry import Registry
from distill.search_config import SCORES, SearchConfig


@dataclass
class ModelConfig:
    """Which detector to build."""

    name: str = "efficientdet_dm2"  # a name from `distill info --list`
    image_size: Optional[int] = None  # input side in pixels (multiple of 128); default: the model's
    pretrained: bool = False  # timm backbone weights from the hub (needs internet)
    backbone_weights: Optional[str] = None  # local backbone weights file (timm state dict)
    fusion: Optional[str] = None  # BiFPN fusion: fast | softmax | sum (default: the model's)
    bn_momentum: Optional[float] = None  # BatchNorm momentum for the whole model (default: model's)
    drop_path_rate: Optional[float] = None  # backbone stochastic depth (default: the model's, 0.2)
    backbone: Optional[str] = None  # a timm backbone by name instead of the preset's
    # further settings of the model's builder, e.g. {fpn_channels: 64, head_norm: gn}; an
    # unknown one stops with the valid names (see the model's config class)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig(DataConfig):
    """Dataset section: the data loader settings plus the embedded generator's settings."""

    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule and weight averaging."""

    name: str = "sgd"  # sgd | adamw
    lr: float = 0.08  # peak learning rate (for the recipe's batch size)
    momentum: float = 0.9  # SGD momentum (adamw: beta1)
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0  # linear warm-up from lr * warmup_factor, in epochs (fractions ok)
    warmup_factor: float = 0.1
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    ema_decay: float = 0.9998  # EMA of weights (warm-up adjusted); 0 switches EMA off
    # train the last part of the run with frozen BatchNorm statistics (e.g. 0.7: the last 30% of
    # epochs); null: never. Short from-scratch runs then behave the same in eval mode
    freeze_bn_at: Optional[float] = None


@dataclass
class TrainerConfig:
    """Lightning Trainer settings."""

    epochs: int = 20
    max_steps: int = -1  # stop after this many optimizer steps (-1: epochs decide)
    accelerator: str = "auto"  # auto | cpu | gpu
    # a count, -1 or "auto" (every visible device of the accelerator), or a list of device ids
    # such as [0, 2], as Lightning takes them
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ...
    # SyncBatchNorm across processes (detector and distiller BNs); null: on with >1 device
    sync_batchnorm: Optional[bool] = None
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    grad_clip: float = 10.0  # gradient norm clipping (0: off)
    val_every: int = 1  # validate every N epochs
    # send the training values to the logger every N optimizer steps (the others are not logged
    # at all: Lightning's per-value bookkeeping costs ~0.8 ms on a CPU); the loss in the
    # progress bar is updated every step
    log_every: int = 10
    limit_val_batches: float = 1.0  # fraction (<= 1.0) or number of validation batches
    deterministic: bool = False
    progress_bar: bool = True
    # also save checkpoints/last.ckpt every N optimizer steps (0: at epoch ends only), so a
    # killed run resumed with resume=true loses at most N steps
    checkpoint_every_steps: int = 0
    # the trained model's weights and inputs in channels_last (NHWC) memory format: faster
    # convolutions (EfficientDet-D0 training step on a 2-core CPU: -27%), same numbers
    channels_last: bool = True
    # torch.compile the trained model's forward (and the teacher's in distillation): the first
    # steps pay the compilation (minutes on a small CPU), later ones run fused kernels
    compile: bool = False


@dataclass
class TeacherConfig:
    """The teacher of a distillation run: its model and where its weights come from."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="efficientdet_d0"))
    # a `distill train` / `distill run` checkpoint; empty: `distill run` trains the teacher (and
    # reuses that training on later runs of the same teacher recipe)
    checkpoint: Optional[str] = None
    epochs: Optional[int] = None  # teacher training epochs (default: 2 x trainer.epochs)
    lr: Optional[float] = None  # teacher training peak learning rate (default: optim.lr)
    seed: Optional[int] = None  # teacher training seed (default: the recipe's seed); fixing it
    # lets runs with several student seeds share one trained teacher
    # quality gate: `distill run` stops before the student stages when the teacher's validation
    # mAP is below this (null: no gate; a teacher at chance level is always a loud warning)
    min_map: Optional[float] = None
    # which checkpoint of a teacher `distill run` trained (or reuses from its cache) teaches:
    # last (the final weights, which its metrics describe) | best (best validation mAP; then
    # evaluated again, so the report shows that one's mAP)
    use: str = "last"
    # the teacher's forward pass: null runs it like the student (trainer.precision); bf16 runs it
    # under torch.autocast(bfloat16) (CPU too), 32 in float32. Its features reach the
    # distillation loss as float32 either way
    precision: Optional[str] = None
    channels_last: bool = True  # teacher weights and inputs in channels_last memory format
    # what the teacher sees when its image_size is larger than the student's: resized (the
    # student's batch upsampled) | native (training images prepared at the teacher's size, the
    # student's copy downsampled with antialiasing and its boxes scaled: the detail it was
    # trained on). Validation is the student's, at its own size, either way
    input: str = "resized"


@dataclass
class WeightConfig:
    """How the distillation weight changes over the run (updated every optimizer step)."""

    # cosine | linear | constant | step | auto (auto: the cosine from start to end, times a
    # factor that keeps the weighted term at `target` x the detection loss, running averages)
    schedule: str = "cosine"
    start: float = 1.0
    end: float = 0.1  # cosine / linear end value
    stop_at: Optional[float] = None  # fraction of the run after which the weight is 0
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions
    gamma: float = 0.1  # step: factor per milestone passed
    target: float = 1.0  # auto: weighted term / detection loss at the start of the run


@dataclass
class DistillConfig:
    """What the student learns from the teacher, and the stages `distill run` goes through.

    ``terms`` lists the distillation terms, each a mapping with a ``kind`` (feature | prediction
    | crosskd) and the keys of that kind (see distill/distillation/terms/); a term without
    ``strides`` / ``weight`` (or, for feature terms, ``loss`` / ``tau`` / ``level_weights`` /
    ``always_align``) takes the values of this section. Without ``terms`` the section is one
    feature term: DAMO-YOLO's neck-feature distillation.
    """

    terms: Optional[list[dict[str, Any]]] = None
    loss: str = "cwd"  # feature loss: cwd | mimic | fgd | mgd (`distill info --distill`)
    tau: float = 1.0  # cwd temperature
    strides: Optional[list[int]] = field(default_factory=lambda: [8, 16, 32])  # null: all shared
    level_weights: Optional[list[float]] = None  # one per distilled stride (default: all 1.0)
    always_align: bool = True  # 1x1 align conv even where the channels already match
    weight: WeightConfig = field(default_factory=WeightConfig)
    # search (optional, first: a backbone for the student) | teacher | baseline | distilled
    stages: list[str] = field(default_factory=lambda: ["teacher", "baseline", "distilled"])
    # a chain of teachers [L, M, ...] replacing the `teacher` section's model and checkpoint: L
    # teaches M, M teaches the student. Each entry is a model spec (the keys of `teacher.model`,
    # or just its name) plus optional epochs, checkpoint, baseline, terms (distill/chain.py);
    # null or []: the `teacher` section teaches the student directly
    chain: Optional[list[Any]] = None
    latency_runs: int = 20  # timed CPU forward passes (batch 1) per model for the report


@dataclass
class Recipe:
    """A whole recipe: what to train, on which data, how, and where the results go."""

    name: str = "run"  # run folder name under output_dir
    seed: int = 0
    output_dir: str = "runs"
    # true: `distill run` / `distill train` continue the run in output_dir/name (not a fresh
    # name-2): finished stages (metrics.json) are skipped, a stage with a last.ckpt resumes there
    resume: bool = False
    logger: str = "wandb"  # wandb | csv | tensorboard | none
    wandb_mode: str = "offline"  # offline | online | disabled
    wandb_project: str = "distill"
    model: ModelConfig = field(default_factory=ModelConfig)  # the detector (the student in `run`)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # `distill run` / `check` only
    distill: DistillConfig = field(default_factory=DistillConfig)  # `distill run` / `check` only
    data: DatasetConfig = field(default_factory=DatasetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)  # `distill search` only


CHOICES: dict[str, tuple[str, ...]] = {
    "logger": ("wandb", "csv", "tensorboard", "none"),
    "wandb_mode": ("offline", "online", "disabled"),
    "model.fusion": ("fast", "softmax", "sum"),
    "teacher.model.fusion": ("fast", "softmax", "sum"),
    "distill.weight.schedule": ("cosine", "linear", "constant", "step", "auto"),
    "data.bad_samples": ("error", "drop"),
    "optim.name": ("sgd", "adamw"),
    "trainer.precision": ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"),
    "teacher.precision": ("bf16", "32"),
    "teacher.use": ("last", "best"),
    "teacher.input": ("resized", "native"),
    "search.score": SCORES,
}


STAGES: tuple[str, ...] = ("search", "teacher", "baseline", "distilled")

# Checks of a loaded recipe that need more than the schema (e.g. the search section against the
# search space): ``fn(recipe) -> list of problem strings`` (or it raises ``RecipeError``), run by
# ``load_recipe`` after its own validation; the first problem stops the load. The modules that
# register them are named in the ``distill.recipe_checks`` entry-point group (this project's
# pyproject.toml: ``distill.search.checks``), so this schema imports none of them.
RECIPE_CHECKS = Registry("recipe check", entry_point_group="distill.recipe_checks",
                         installed_by="distill-det")

def _check_keys(values: Any, schema: type, source: str, prefix: str = "") -> None:
    """Raise RecipeError for the first key in ``values`` that ``schema`` does not define."""
    if not isinstance(values, dict):
        return
    known = {f.name: f for f in fields(schema)}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise RecipeError(
                f"{source}: unknown key '{path}'.{hint} Valid keys"
                f"{' under ' + repr(prefix[:-1]) if prefix else ''}: {', '.join(sorted(known))}"
            )
        sub = get_type_hints(schema)[key]
        if isinstance(value, dict):
            if get_origin(sub) is dict:  # a free-form mapping: its keys are the builder's
                continue
            if not is_dataclass(sub):
                raise RecipeError(f"{source}: key '{path}' takes a single value, not a mapping")
            _check_keys(value, sub, source, prefix=f"{path}.")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe file and, recursively, the ``base`` recipes it names (base values first)."""
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    if path.resolve() in seen:
        raise RecipeError(f"{path}: 'base' chain loops back to itself")
    try:
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # yaml errors come in several types
        raise RecipeError(f"{path}: not valid YAML: {err}") from err
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RecipeError(
            f"{path}: a recipe must be a mapping of keys, got {type(values).__name__}"
        )
    base = values.pop("base", None)
    _check_keys(values, Recipe, str(path))
    paths_beside(values, path.parent)
    if base is None:
        return values
    base_path = (path.parent / str(base)).resolve()
    merged = OmegaConf.merge(_read_yaml(base_path, (*seen, path.resolve())), values)
    return OmegaConf.to_container(merged)


def _parse_overrides(overrides: list[str]) -> dict:
    """Turn ``key=value`` strings into a nested dict, with a clear error for malformed ones."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise RecipeError(f"command line: override '{item}' is not of the form key=value")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise RecipeError(f"command line: cannot parse overrides {overrides}: {err}") from err


def _check_choices(recipe: DictConfig, source: str) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(recipe, key)
        if value is not None and value not in allowed:
            raise RecipeError(
                f"{source}: '{key}' is '{value}', expected one of {', '.join(allowed)}"
            )
    # data.format: a registered format (loaded lazily), data.options: that format's settings
    check_data_section(OmegaConf.to_container(recipe.data), source)
    stages = list(OmegaConf.select(recipe, "distill.stages") or [])
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages or len(set(stages)) != len(stages):
        raise RecipeError(
            f"{source}: 'distill.stages' is {stages}, expected distinct names from "
            f"{', '.join(STAGES)}"
        )
    check_devices(OmegaConf.select(recipe, "trainer.devices"), source)
    norm = (OmegaConf.select(recipe, "model.options") or {}).get("norm", "bn")
    if OmegaConf.select(recipe, "data.batch_size") == 1 and norm != "gn_ws":
        raise RecipeError(f"{source}: 'data.batch_size' is 1, expected at least 2: BatchNorm "
                          "trains on the statistics of a batch (at 1 image its smallest maps "
                          "have one value per channel); or model.options.norm: gn_ws")
    if OmegaConf.select(recipe, "logger") == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise RecipeError(f"{source}: 'logger' is tensorboard, but the tensorboard package "
                              "is not installed (pip install tensorboard), or use wandb / csv")
    if "search" in stages and stages[0] != "search":
        raise RecipeError(f"{source}: 'distill.stages' is {stages}: 'search' must come first "
                          "(the later stages train the structure it finds)")


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe file (or the defaults when ``path`` is None) with ``key=value`` overrides.

    Returns a typed ``Recipe``; raises ``RecipeError`` naming the file and key on any problem.
    """
    source = str(path) if path is not None else "defaults"
    values = _read_yaml(Path(path)) if path is not None else {}
    return recipe_from_values(values, overrides, source)


def recipe_from_values(values: dict, overrides: list[str] | None = None,
                       source: str = "recipe") -> Recipe:
    """A typed ``Recipe`` from a recipe's ``values`` (e.g. the one a checkpoint stores) with
    ``key=value`` overrides, checked as ``load_recipe`` checks a file (``source`` names it)."""
    _check_keys(values, Recipe, source)
    cli = _parse_overrides(list(overrides or []))
    _check_keys(cli, Recipe, "command line")
    schema = OmegaConf.structured(Recipe)
    for layer, where in ((values, source), (cli, "command line")):
        try:
            schema = OmegaConf.merge(schema, layer)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise RecipeError(f"{where}: bad value for '{key}': {err.msg}") from err
    origin = f"{source} (+ command line)" if cli else source
    check_finite(OmegaConf.to_container(schema, resolve=True), origin)
    _check_choices(schema, origin)
    check_limits(schema, origin)
    recipe = OmegaConf.to_object(schema)
    for name in RECIPE_CHECKS.names():
        problems = RECIPE_CHECKS.get(name)(recipe)
        if problems:
            raise RecipeError(f"{origin}: {problems[0]}")
    return recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML text (saved into every run folder)."""
    return OmegaConf.to_yaml(OmegaConf.structured(recipe))


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain Python containers (for checkpoints and loggers)."""
    return OmegaConf.to_container(OmegaConf.structured(recipe))
