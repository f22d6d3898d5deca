"""The teacher: its recipe, its cache (trained once per teacher recipe), its weights, its gate."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from distill.checkpoints import (
    check_class_names,
    load_state_strict,
    load_weights_file,
    read_checkpoint,
    saved_class_names,
)
from distill.config import Recipe, recipe_to_dict
from distill.errors import RecipeError
from distill.lightning.detection import build_detector
from distill.locks import folder_lock
from distill.models.effdet_import import (
    EFFDET_VARIANTS,
    convert_effdet_state_dict,
    is_effdet_state_dict,
)
from distill.report import StageRows, write_report
from distill.stages.base import RunContext, Stage, StageResult, Teacher, derive, stage_row
from distill.stages.chain import ChainEntry, link_recipe
from distill.training import evaluate, is_rank_zero, train, trained_checkpoint

CHANCE_MAP50 = 0.02  # a teacher below this mAP50 on the check batches is "at chance"
TEACHER_EPOCHS_FACTOR = 2  # teacher.epochs null: this many times the students' epochs


def teacher_recipe(recipe: Recipe) -> Recipe:
    """The recipe that trains the teacher: the teacher's model on the same data, for
    ``teacher.epochs`` (default: twice the students' epochs, so that the teacher-student gap
    is worth distilling)."""
    cfg = recipe.teacher
    changes: dict[str, Any] = {
        "name": f"{recipe.name}-teacher",
        "trainer": {"epochs": cfg.epochs or TEACHER_EPOCHS_FACTOR * recipe.trainer.epochs},
    }
    if cfg.lr:
        changes["optim"] = {"lr": cfg.lr}
    if cfg.seed is not None:
        changes["seed"] = cfg.seed
    # the teacher's model section replaces the student's whole: merged, the student's
    # model.options would reach the teacher (and its cache key)
    return derive(dataclasses.replace(recipe, model=copy.deepcopy(cfg.model)), changes)


def _without_unset(settings: Any, defaults: Any = None) -> Any:
    """``settings`` without null or empty values and without values equal to ``defaults``'s:
    a key added to the recipe later, at its default, keeps earlier cache keys (and teachers)."""
    if not isinstance(settings, dict):
        return settings
    defaults = defaults if isinstance(defaults, dict) else {}
    kept = {key: _without_unset(value, defaults.get(key)) for key, value in settings.items()
            if key not in defaults or value != defaults[key]}
    return {key: value for key, value in kept.items() if value is not None and value != {}}


def teacher_cache_dir(recipe: Recipe) -> Path:
    """Where a teacher trained by `distill run` lives: keyed by everything that shapes it (the
    data root as an absolute path: a relative and an absolute spelling share one teacher)."""
    settings = recipe_to_dict(teacher_recipe(recipe))  # the key hashes the plain form
    for key in ("name", "output_dir", "resume", "logger", "wandb_mode", "wandb_project",
                "teacher", "distill", "search"):
        settings.pop(key)
    for key in ("progress_bar", "log_every", "checkpoint_every_steps"):
        settings["trainer"].pop(key)
    settings["data"].pop("num_workers")
    root = settings["data"].get("root")
    if isinstance(root, str) and root:  # one dataset, however its folder is spelt
        settings["data"]["root"] = os.path.normpath(os.path.abspath(root))
    settings = _without_unset(settings, recipe_to_dict(Recipe()))
    digest = hashlib.sha1(OmegaConf.to_yaml(settings).encode()).hexdigest()[:10]
    return Path(recipe.output_dir) / "teachers" / f"{recipe.teacher.model.name}-{digest}"


def teacher_checkpoint(recipe: Recipe) -> Path | None:
    """The teacher weights to use: the recipe's checkpoint, else a cached earlier training."""
    if recipe.teacher.checkpoint:
        path = Path(recipe.teacher.checkpoint)
        if not path.is_file():
            raise RecipeError(f"teacher.checkpoint: file not found: {path}")
        return path
    cached = teacher_cache_dir(recipe)
    if (cached / "metrics.json").is_file() and (cached / "checkpoints" / "last.ckpt").is_file():
        metrics = OmegaConf.to_container(OmegaConf.load(cached / "metrics.json"))
        return cached / "checkpoints" / trained_checkpoint(metrics, recipe.teacher.use).name
    return None


def teacher_state(recipe: Recipe, path: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """The teacher's weights (detector keys) from a `distill` checkpoint or an effdet file, and
    the class names the checkpoint was trained on (None where it saved none)."""
    name = recipe.teacher.model.name
    raw = load_weights_file(path)
    if isinstance(raw, dict) and "state_dict" not in raw and is_effdet_state_dict(raw):
        if name not in EFFDET_VARIANTS:
            raise RecipeError(
                f"teacher.checkpoint {path} holds effdet weights, but teacher.model.name '{name}' "
                f"is not an effdet configuration; use one of {', '.join(EFFDET_VARIANTS)}"
            )
        return convert_effdet_state_dict(raw, variant=name), None  # the file's class count
    checkpoint = read_checkpoint(path)
    state = checkpoint["state_dict"]
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return model_state or state, saved_class_names(checkpoint)


def load_teacher(recipe: Recipe, num_classes: int, path: Path,
                 class_names: list[str] | None = None) -> nn.Module:
    """Build the teacher and load its weights strictly (``weights_only=True``) from ``path``:
    a `distill train` / `distill run` / `distill import-effdet` checkpoint or an effdet file.
    With ``class_names`` (the data's), a checkpoint trained on other classes is refused."""
    state, saved = teacher_state(recipe, path)
    if class_names is not None:
        check_class_names(saved, class_names, f"teacher.checkpoint {path}", "the recipe's data")
    teacher = build_detector(recipe.teacher.model, num_classes=num_classes)
    what = (f"teacher '{recipe.teacher.model.name}' with {num_classes} classes (for effdet "
            f"weights of another class set: distill import-effdet --class-indices)")
    load_state_strict(teacher, state, f"teacher.checkpoint {path}", what)
    return teacher.eval()


def obtain_teacher(recipe: Recipe, num_classes: int, run_dir: Path, stage: str = "teacher",
                   class_names: list[str] | None = None) -> Teacher:
    """Reuse the recipe's (or a cached) teacher checkpoint, or train one; with its metrics.
    ``stage`` names it in the log (a chain obtains its teachers and middle baselines here)."""
    path = teacher_checkpoint(recipe)
    metrics: dict[str, Any] = {}
    if path is None:
        cache = teacher_cache_dir(recipe)
        with folder_lock(cache, wait=True):  # another run training this teacher: reuse it after
            path = teacher_checkpoint(recipe)
            if path is None:
                print(f"== stage {stage}: training {recipe.teacher.model.name} into {cache}")
                metrics = train(teacher_recipe(recipe), run_dir=cache)
                path = trained_checkpoint(metrics, recipe.teacher.use)
    if not metrics and (path.parent.parent / "metrics.json").is_file() \
            and not recipe.teacher.checkpoint:
        print(f"== stage {stage}: reusing {path} (same teacher recipe as an earlier run)")
        metrics = OmegaConf.to_container(OmegaConf.load(path.parent.parent / "metrics.json"))
    if not metrics or recipe.teacher.use == "best":  # a training's metrics are its last weights'
        print(f"== stage {stage}: evaluating {path}")
        metrics = {**metrics, **evaluate(teacher_recipe(recipe), path,
                                         output=run_dir / "teacher-eval.json")}
    metrics["checkpoint"] = str(path)
    return Teacher(load_teacher(recipe, num_classes, path, class_names), path, metrics)


def check_teacher_quality(recipe: Recipe, metrics: dict, run_dir: Path, rows: StageRows
                          ) -> None:
    """Warn about a teacher at chance level; stop (report written) below ``teacher.min_map``."""
    map50, value = metrics.get("map_50", 0.0), metrics.get("map", 0.0)
    if map50 < CHANCE_MAP50:
        print(f"WARNING: teacher at chance level (mAP50 {map50:.4f} < {CHANCE_MAP50})")
    gate = recipe.teacher.min_map
    if gate is not None and value < gate:
        if is_rank_zero():
            rows.time_models(recipe.distill.latency_runs, recipe.trainer.channels_last)
            write_report(run_dir, rows, {"recipe": recipe.name, "stopped": "teacher below min_map"})
        raise RecipeError(
            f"teacher.min_map: the teacher's validation mAP {value:.4f} is below {gate}; "
            f"stopping before the student stages (report so far: {run_dir / 'report.md'})"
        )


class TeacherStage(Stage):
    """Obtain the first teacher (the ``teacher`` section's, or a chain's first ``entry``):
    given checkpoint, teacher cache, or trained; its row when ``report`` (a chain always
    reports it). It teaches the next link."""

    name = "teacher"

    def __init__(self, entry: ChainEntry | None = None, report: bool = True) -> None:
        self.entry, self.report = entry, report

    def run(self, ctx: RunContext) -> StageResult:
        recipe, entry = ctx.recipe, self.entry
        single = recipe if entry is None else link_recipe(recipe, entry, recipe.model,
                                                          entry.spec.checkpoint)
        teacher = obtain_teacher(single, ctx.num_classes, ctx.run_dir,
                                 class_names=ctx.data.class_names)
        result = StageResult(teacher=teacher)
        if entry is not None:  # a chain entry's row is at its own input size
            row = stage_row(entry.model, None, teacher.metrics, ctx.num_classes)
            result.rows.append(("teacher", row, teacher.model))
        elif self.report:
            row = stage_row(recipe.teacher.model, recipe.model.image_size, teacher.metrics,
                            ctx.num_classes)
            result.rows.append(("teacher", row, teacher.model))
        return result
