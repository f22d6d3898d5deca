"""The teacher chain, ``distill.chain: [L, M, ...]``: L teaches M, M teaches the student.

Each entry is a model spec (the keys of ``teacher.model``, or just a model name) plus
``epochs``, ``checkpoint``, ``baseline`` and ``terms``. Every link is an ordinary single-teacher
recipe (``link_recipe``), so the chain reuses `distill run`'s stages: the first entry is
obtained like ``teacher`` (given checkpoint, teacher cache, or trained), every later entry is
distilled from the one before it into ``run_dir/middle<i>`` (``distill.stages.middle``, or loaded
from its checkpoint), and the last one teaches the student in the ``distilled`` stage. All links
are checked (models built, terms paired) before any training (``distill.stages.link``).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from distill.config import ModelConfig, Recipe
from distill.errors import RecipeError
from distill.training import check_model


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
    """The recipe's chain, checked (keys, types, model names and settings, checkpoint files;
    each link's terms: ``distill.stages.link.recipe_links``); ``[]`` without one."""
    values = list(recipe.distill.chain or [])
    if values and recipe.teacher.checkpoint:
        raise RecipeError("teacher.checkpoint: distill.chain replaces the teacher section's model "
                          "and checkpoint; give the checkpoint as distill.chain[0].checkpoint")
    return [parse_entry(value, i) for i, value in enumerate(values)]


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
