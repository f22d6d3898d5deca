"""The student's stages: ``baseline`` (trained alone) and ``distilled`` (taught by the teacher of
its link), and the distillation training every link (a chain's middles too) runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import nn

from distill.checkpoints import write_detector_checkpoint
from distill.config import Recipe, recipe_to_dict, recipe_to_yaml
from distill.distillation.module import DistillationModule
from distill.distillation.terms import TermConfig
from distill.io import write_text_atomic
from distill.lightning.detection import build_detector
from distill.stages.base import RunContext, Stage, StageResult, stage_row
from distill.stages.link import Link, teacher_input_size
from distill.training import finished_metrics, fit, is_rank_zero, prepare_data, train


def export_student(module: DistillationModule, recipe: Recipe, path: Path) -> Path:
    """Save the student alone, loadable by ``distill eval`` with the same recipe."""
    return write_detector_checkpoint(
        path, module.model.state_dict(),
        {"recipe": recipe_to_dict(recipe), "class_names": module.class_names})


def run_distilled(recipe: Recipe, teacher: nn.Module, num_classes: int, stage_dir: Path,
                  terms: list[TermConfig] | None = None) -> tuple[dict[str, Any], nn.Module]:
    """Train the student with the teacher and ``terms`` (the link's; None: resolved from the
    recipe) into ``stage_dir``; export ``student.ckpt``.

    With ``resume: true`` a finished stage (metrics.json and student.ckpt) is not run again and
    an unfinished one continues from its ``last.ckpt``. Returns the metrics and the student.
    """
    student_path = stage_dir / "checkpoints" / "student.ckpt"
    done = finished_metrics(recipe, stage_dir) if student_path.is_file() else None
    if done is not None:
        return {**done, "checkpoint": str(student_path)}, build_detector(recipe.model, num_classes)
    pl.seed_everything(recipe.seed, workers=True)  # the same student init as the baseline
    data = prepare_data(recipe, train_image_size=teacher_input_size(recipe))
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stage_dir / "recipe.yaml", recipe_to_yaml(recipe))
    module = DistillationModule(recipe, data.class_names, teacher=teacher, terms=terms)
    metrics = fit(replace(recipe, name=f"{recipe.name}-distilled"), module, data, stage_dir)
    if is_rank_zero():  # one writer under DDP
        export_student(module, recipe, student_path)
    metrics["checkpoint"] = str(student_path)
    return metrics, module.model


class BaselineStage(Stage):
    """The student trained alone, into ``run_dir/baseline``."""

    name = "baseline"

    def run(self, ctx: RunContext) -> StageResult:
        recipe = ctx.recipe
        print(f"== stage baseline: {recipe.model.name} without a teacher")
        metrics = train(replace(recipe, name=f"{recipe.name}-baseline"),
                        run_dir=ctx.run_dir / "baseline")
        student = build_detector(recipe.model, ctx.num_classes)
        row = stage_row(recipe.model, recipe.model.image_size, metrics, ctx.num_classes)
        return StageResult(rows=[("baseline", row, student)])


class DistilledStage(Stage):
    """The student taught by the teacher of its ``link`` (the last one of a chain), into
    ``run_dir/distilled``."""

    name = "distilled"

    def __init__(self, link: Link) -> None:
        self.link = link

    def run(self, ctx: RunContext) -> StageResult:
        recipe = ctx.recipe
        single = self.link.recipe(recipe, ctx.teacher.path)
        print(f"== stage distilled: {recipe.model.name} taught by {single.teacher.model.name}")
        metrics, student = run_distilled(single, ctx.teacher.model, ctx.num_classes,
                                         ctx.run_dir / "distilled", self.link.terms)
        row = stage_row(recipe.model, recipe.model.image_size, metrics, ctx.num_classes)
        return StageResult(rows=[("distilled", row, student)])
