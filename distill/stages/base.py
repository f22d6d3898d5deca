"""What every stage of `distill run` shares: the ``Stage`` interface, its result, the run context.

A stage (search, teacher, chain middle, baseline, distilled) has a ``name`` and
``run(ctx) -> StageResult``: the report rows it adds, the teacher it hands to the next link, the
recipe the later stages train (the search's). ``distill.pipeline.run`` checks every link
(``stages.link``), then runs the recipe's stages in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from distill.config import ModelConfig, Recipe
from distill.data import DetectionDataModule
from distill.info import model_info
from distill.lightning.detection import model_overrides
from distill.report import StageRows


def derive(recipe: Recipe, changes: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with nested ``changes`` merged in (typed, like a recipe file)."""
    merged = OmegaConf.merge(OmegaConf.structured(recipe), changes)
    return OmegaConf.to_object(merged)


@dataclass
class Teacher:
    """A teacher obtained by a stage: the frozen model, its weights file and its metrics."""

    model: nn.Module
    path: Path
    metrics: dict[str, Any]


@dataclass
class StageResult:
    """What a stage produced: report rows ``(name, row, model)``, the teacher of the next link,
    a new recipe for the later stages (the search's), report extras and a chain link."""

    rows: list[tuple[str, dict[str, Any], nn.Module]] = field(default_factory=list)
    teacher: Teacher | None = None
    recipe: Recipe | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    link: dict[str, Any] | None = None


@dataclass
class RunContext:
    """What the stages of one `distill run` share: the typed recipe (the searched one after the
    search stage), the prepared data, the run folder, the rows so far, the current teacher."""

    recipe: Recipe
    data: DetectionDataModule
    run_dir: Path
    rows: StageRows = field(default_factory=StageRows)
    teacher: Teacher | None = None

    @property
    def num_classes(self) -> int:
        """Classes of the dataset."""
        return self.data.num_classes


class Stage:
    """One step of `distill run`, run in order by ``distill.pipeline.run``. The pre-flight part
    (models built, terms paired, teacher weights checked) is the links' (``stages.link``),
    done for every link before any stage runs."""

    name: str = "stage"

    def run(self, ctx: RunContext) -> StageResult:
        """Do the stage's work; what it produced."""
        raise NotImplementedError


def stage_row(model_cfg: ModelConfig, fallback_size: int | None, metrics: dict,
              num_classes: int) -> dict[str, Any]:
    """One report row: accuracy from ``metrics``, size from ``distill info`` at the model's
    ``image_size`` (else ``fallback_size``, else the model's default). The latency is measured
    later, every stage's model side by side (``StageRows.time_models``)."""
    size = model_cfg.image_size or fallback_size
    info = model_info(model_cfg.name, num_classes=num_classes, image_size=size,
                      **model_overrides(model_cfg))
    return {
        "model": model_cfg.name,
        "map": metrics["map"],
        "map_50": metrics["map_50"],
        "map_75": metrics.get("map_75"),
        "params": info["params"],
        "macs": info["macs"],
        "image_size": info["image_size"],
        "train_seconds": metrics.get("train_seconds"),
        "checkpoint": metrics.get("checkpoint"),
    }
