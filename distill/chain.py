"""The teacher chain, ``distill.chain: [L, M, ...]``: L teaches M, M teaches the student.

Each entry is a model spec (the keys of ``teacher.model``, or just a model name) plus
``epochs``, ``checkpoint``, ``baseline`` and ``terms``. Every link is an ordinary single-teacher
recipe (``link_recipe``), so the chain reuses `distill run`'s stages: the first entry is
obtained like ``teacher`` (given checkpoint, teacher cache, or trained), every later entry is
distilled from the one before it into ``run_dir/middle<i>`` (or loaded from its checkpoint), and
the last one teaches the student in the ``distilled`` stage. All links are checked (models built,
terms paired) before any training.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import distributed as dist
from torch import nn

from distill.config import ModelConfig, Recipe
from distill.data import DetectionDataModule
from distill.distillation.terms import resolve_terms
from distill.errors import RecipeError
from distill.pipeline import (
    TEACHER_EPOCHS_FACTOR,
    check_link,
    check_teacher_quality,
    load_teacher,
    run_distilled,
    run_teacher,
    stage_row,
    teacher_checkpoint,
)
from distill.report import StageRows
from distill.training import check_model, prepare_data, resolve_image_size


@dataclass
class ChainSpec(ModelConfig):
    """The keys of one ``distill.chain`` entry: a model spec and how to get its weights."""

    epochs: Optional[int] = None  # training epochs (default: teacher.epochs, else 2 x students')
    checkpoint: Optional[str] = None  # weights to load instead of training (or distilling) it
    # also train it alone, for the gap its link closes (default: when distill.stages has
    # baseline); the first entry has no link before it
    baseline: Optional[bool] = None
    terms: Optional[list[dict[str, Any]]] = None  # the terms of the link it teaches (default:
    # distill.terms), e.g. feature terms where its anchors differ from its student's


@dataclass
class ChainEntry:
    """A checked chain entry: its position, model and settings."""

    index: int
    spec: ChainSpec

    @property
    def key(self) -> str:
        """Its recipe key, ``distill.chain[i]``."""
        return f"distill.chain[{self.index}]"

    @property
    def stage(self) -> str:
        """Its stage (and report row): ``teacher`` for the first entry, else ``middle<i>``."""
        return "teacher" if self.index == 0 else f"middle{self.index}"

    @property
    def model(self) -> ModelConfig:
        """Its model spec alone (as ``teacher.model`` / ``model`` take it)."""
        return ModelConfig(**{f.name: copy.deepcopy(getattr(self.spec, f.name))
                              for f in fields(ModelConfig)})


def parse_entry(value: Any, index: int) -> ChainEntry:
    """One ``distill.chain`` value (a model name or a mapping) as a typed entry; errors name
    ``distill.chain[i].key``."""
    key = f"distill.chain[{index}]"
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise RecipeError(f"{key}: an entry is a model name or a model spec mapping "
                          f"({{name: ..., image_size: ..., epochs: ...}}), got {value!r}")
    valid = [f.name for f in fields(ChainSpec)]
    for name in value:
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean '{key}.{close[0]}'?" if close else ""
            raise RecipeError(f"{key}.{name}: unknown key.{hint} Valid keys: "
                              f"{', '.join(sorted(valid))}")
    if not value.get("name"):
        raise RecipeError(f"{key}.name: missing; every chain entry names its model "
                          "(`distill info` lists them)")
    try:
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ChainSpec), value))
    except OmegaConfBaseException as err:
        raise RecipeError(f"{key}.{getattr(err, 'key', '?')}: bad value: {err.msg}") from err
    entry = ChainEntry(index, spec)
    check_model(entry.model, key)
    if spec.epochs is not None and spec.epochs < 1:
        raise RecipeError(f"{key}.epochs: {spec.epochs}, expected a positive number")
    if spec.checkpoint and not Path(spec.checkpoint).is_file():
        raise RecipeError(f"{key}.checkpoint: file not found: {spec.checkpoint}")
    return entry


def resolve_chain(recipe: Recipe) -> list[ChainEntry]:
    """The recipe's chain, checked (keys, types, model names and settings, checkpoint files,
    each link's terms); ``[]`` without one."""
    values = list(recipe.distill.chain or [])
    if values and recipe.teacher.checkpoint:
        raise RecipeError("teacher.checkpoint: distill.chain replaces the teacher section's model "
                          "and checkpoint; give the checkpoint as distill.chain[0].checkpoint")
    entries = [parse_entry(value, i) for i, value in enumerate(values)]
    for entry in entries:
        if entry.spec.terms is not None:
            try:
                resolve_terms(link_recipe(recipe, entry, recipe.model, None).distill)
            except RecipeError as err:
                raise RecipeError(f"{entry.key}.terms: {err}") from err
    return entries


def chain_epochs(recipe: Recipe, entry: ChainEntry) -> int:
    """The epochs an entry trains: its own, else ``teacher.epochs``, else twice the students'."""
    default = recipe.teacher.epochs or TEACHER_EPOCHS_FACTOR * recipe.trainer.epochs
    return entry.spec.epochs or default


def link_recipe(recipe: Recipe, teacher: ChainEntry, student: ModelConfig,
                checkpoint: str | Path | None, **changes: Any) -> Recipe:
    """The single-teacher recipe of one link: ``teacher`` (weights at ``checkpoint``, None: the
    teacher cache or training) teaches ``student`` with the link's terms; no chain. ``changes``
    set top-level recipe keys (``name``) or ``epochs`` (the student's ``trainer.epochs``)."""
    link = copy.deepcopy(recipe)
    link.teacher.model = teacher.model
    link.teacher.checkpoint = str(checkpoint) if checkpoint else None
    link.teacher.epochs = teacher.spec.epochs or recipe.teacher.epochs
    link.model = copy.deepcopy(student)
    if teacher.spec.terms is not None:
        link.distill.terms = copy.deepcopy(teacher.spec.terms)
    link.distill.chain = None
    if "epochs" in changes:
        link.trainer.epochs = changes.pop("epochs")
    for key, value in changes.items():
        setattr(link, key, value)
    return link


def add_entry_row(rows: StageRows, stage: str, recipe: Recipe, entry: ChainEntry,
                  model: nn.Module, metrics: dict, num_classes: int) -> None:
    """An entry's report row as ``stage``, at its own input size (its image_size or its
    model's default)."""
    own = link_recipe(recipe, entry, entry.model, None)
    rows.add(stage, stage_row(own, entry.model, metrics, num_classes), model)


def link_terms(link: Recipe) -> list[str]:
    """The names of a link recipe's terms."""
    return [t.name or t.kind for t in resolve_terms(link.distill)]


def check_chain(recipe: Recipe, data: DetectionDataModule | None, batches: int) -> dict:
    """``distill check`` of every link, first to last; a link that cannot be distilled with its
    terms stops with a ``RecipeError`` naming the link. Returns ``{"links": [...],
    "teacher_at_chance": ...}``."""
    entries = resolve_chain(recipe)
    check_model(recipe.model)
    students = [e.model for e in entries[1:]] + [recipe.model]
    links = []
    for number, (teacher, student) in enumerate(zip(entries, students), 1):
        who = (f"link {number}: {teacher.spec.name} ({teacher.key}) -> {student.name} "
               f"({'the student' if number == len(entries) else entries[number].key})")
        print(f"== {who}")
        link = link_recipe(recipe, teacher, student, teacher.spec.checkpoint)
        path = teacher_checkpoint(link) if teacher.index == 0 or teacher.spec.checkpoint else None
        same_size = data is not None and resolve_image_size(link) == data.image_size
        try:
            pending = (f"distill run distils it in link {number - 1}" if teacher.index
                       else "distill run trains it")
            report = check_link(link, data if same_size else prepare_data(link), batches, path,
                                pending)
        except RecipeError as err:
            raise RecipeError(f"distill.chain {who}: {err} (the link's terms: "
                              f"{teacher.key}.terms, default distill.terms)") from err
        links.append({"link": number, "teacher_key": teacher.key, **report})
    # `distill check` exits 1 when a teacher with weights is at chance level, in any link
    return {"links": links, "teacher_at_chance": any(li.get("teacher_at_chance") for li in links)}


def wants_baseline(recipe: Recipe, entry: ChainEntry) -> bool:
    """Whether a middle entry is also trained alone (its link's gap closed needs it)."""
    if entry.spec.checkpoint:
        return False
    chosen = entry.spec.baseline
    return "baseline" in recipe.distill.stages if chosen is None else chosen


def run_middle(recipe: Recipe, prev: ChainEntry, entry: ChainEntry, teacher: nn.Module,
               teacher_path: Path, num_classes: int, run_dir: Path,
               rows: StageRows) -> tuple[nn.Module, Path, dict[str, Any]]:
    """Distil ``entry`` from ``prev`` (or load its checkpoint) into ``run_dir/middle<i>``, train it
    alone when asked; its rows into ``rows``. Returns the model, its weights and its link."""
    stage, stage_dir = entry.stage, run_dir / entry.stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    if entry.spec.checkpoint:
        own = link_recipe(recipe, entry, recipe.model, entry.spec.checkpoint)
        model, metrics, path = run_teacher(own, num_classes, stage_dir, stage)
    else:
        middle = link_recipe(recipe, prev, entry.model, teacher_path, name=f"{recipe.name}-{stage}",
                             epochs=chain_epochs(recipe, entry))
        print(f"== stage {stage}: {entry.spec.name} ({entry.key}) taught by {prev.spec.name}")
        metrics, _ = run_distilled(middle, teacher, num_classes, stage_dir)
        path = Path(metrics["checkpoint"])
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # under DDP the first process writes student.ckpt; all then read it
        model = load_teacher(link_recipe(recipe, entry, recipe.model, path), num_classes, path)
    add_entry_row(rows, stage, recipe, entry, model, metrics, num_classes)
    link = {"teacher": prev.stage, "student": stage, "baseline": None,
            "terms": link_terms(link_recipe(recipe, prev, entry.model, None))}
    if wants_baseline(recipe, entry):
        alone = link_recipe(recipe, entry, recipe.model, None)
        base, base_metrics, _ = run_teacher(alone, num_classes, stage_dir, f"{stage}_baseline")
        link["baseline"] = f"{stage}_baseline"
        add_entry_row(rows, link["baseline"], recipe, entry, base, base_metrics, num_classes)
    check_teacher_quality(link_recipe(recipe, entry, recipe.model, path), metrics, run_dir, rows)
    return model, path, link


def run_chain(recipe: Recipe, num_classes: int, run_dir: Path, rows: StageRows
              ) -> tuple[nn.Module, Recipe, list[dict[str, Any]]]:
    """Obtain every teacher of the chain, first to last, their rows into ``rows``.

    Returns the last one (frozen, loaded), the recipe of the student's link (that teacher and its
    weights, for ``run_distilled``) and the links (``teacher`` / ``student`` / ``baseline`` row
    names and term names) for the report.
    """
    entries = resolve_chain(recipe)
    first = entries[0]
    first_link = link_recipe(recipe, first, recipe.model, first.spec.checkpoint)
    teacher, metrics, path = run_teacher(first_link, num_classes, run_dir)
    add_entry_row(rows, "teacher", recipe, first, teacher, metrics, num_classes)
    check_teacher_quality(first_link, metrics, run_dir, rows)
    links = []
    for prev, entry in zip(entries, entries[1:]):
        teacher, path, link = run_middle(recipe, prev, entry, teacher, path, num_classes, run_dir,
                                         rows)
        links.append(link)
    last = entries[-1]
    student_link = link_recipe(recipe, last, recipe.model, path)
    links.append({"teacher": last.stage, "student": "distilled", "baseline": "baseline",
                  "terms": link_terms(student_link)})
    return teacher, student_link, links
