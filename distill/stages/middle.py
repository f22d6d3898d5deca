"""A chain's middle entry M: distilled from the entry before it (or loaded from its checkpoint)
into ``run_dir/middle<i>``, also trained alone when asked; it teaches the next link."""

from __future__ import annotations

from pathlib import Path

from torch import distributed as dist

from distill.config import Recipe
from distill.stages.base import RunContext, Stage, StageResult, Teacher, stage_row
from distill.stages.chain import ChainEntry, link_recipe
from distill.stages.distilled import run_distilled
from distill.stages.link import Link
from distill.stages.teacher import TEACHER_EPOCHS_FACTOR, load_teacher, obtain_teacher


def chain_epochs(recipe: Recipe, entry: ChainEntry) -> int:
    """The epochs an entry trains: its own, else ``teacher.epochs``, else twice the students'."""
    default = recipe.teacher.epochs or TEACHER_EPOCHS_FACTOR * recipe.trainer.epochs
    return entry.spec.epochs or default


def wants_baseline(recipe: Recipe, entry: ChainEntry) -> bool:
    """Whether a middle entry is also trained alone (its link's gap closed needs it)."""
    if entry.spec.checkpoint:
        return False
    chosen = entry.spec.baseline
    return "baseline" in recipe.distill.stages if chosen is None else chosen


class MiddleStage(Stage):
    """The student of a chain ``link`` that is not the last: ``middle<i>`` (and
    ``middle<i>_baseline``) rows; the middle teaches the next link."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.name = link.student.stage

    def obtain(self, ctx: RunContext, stage_dir: Path) -> Teacher:
        """The middle's weights: its checkpoint, or distilled from the current teacher."""
        recipe, prev, entry = ctx.recipe, self.link.teacher, self.link.student
        if entry.spec.checkpoint:
            own = link_recipe(recipe, entry, recipe.model, entry.spec.checkpoint)
            return obtain_teacher(own, ctx.num_classes, stage_dir, self.name,
                                  class_names=ctx.data.class_names)
        middle = self.link.recipe(recipe, ctx.teacher.path, name=f"{recipe.name}-{self.name}",
                                  epochs=chain_epochs(recipe, entry))
        print(f"== stage {self.name}: {entry.spec.name} ({entry.key}) taught by {prev.spec.name}")
        metrics, _ = run_distilled(middle, ctx.teacher.model, ctx.num_classes, stage_dir,
                                   self.link.terms)
        path = Path(metrics["checkpoint"])
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # under DDP the first process writes student.ckpt; all then read it
        own = link_recipe(recipe, entry, recipe.model, path)
        return Teacher(load_teacher(own, ctx.num_classes, path), path, metrics)

    def run(self, ctx: RunContext) -> StageResult:
        recipe, entry = ctx.recipe, self.link.student
        stage_dir = ctx.run_dir / self.name
        stage_dir.mkdir(parents=True, exist_ok=True)
        teacher = self.obtain(ctx, stage_dir)
        row = stage_row(entry.model, None, teacher.metrics, ctx.num_classes)
        result = StageResult(rows=[(self.name, row, teacher.model)], teacher=teacher)
        result.link = {"teacher": self.link.teacher.stage, "student": self.name,
                       "baseline": None, "terms": self.link.term_names}
        if wants_baseline(recipe, entry):
            alone = link_recipe(recipe, entry, recipe.model, None)
            base = obtain_teacher(alone, ctx.num_classes, stage_dir, f"{self.name}_baseline")
            result.link["baseline"] = f"{self.name}_baseline"
            row = stage_row(entry.model, None, base.metrics, ctx.num_classes)
            result.rows.append((result.link["baseline"], row, base.model))
        return result
