"""`distill check` and `distill run`: pre-flight check, then teacher -> baseline -> distilled."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from distill.checkpoints import (
    load_state_strict,
    load_weights_file,
    read_checkpoint,
    write_detector_checkpoint,
)
from distill.config import Recipe, recipe_to_dict, recipe_to_yaml
from distill.data import DetectionDataModule
from distill.distillation.module import DistillationModule
from distill.distillation.terms import resolve_terms
from distill.errors import RecipeError
from distill.evaluation import (
    make_map_metric,
    summarize_map,
    to_original_pixels,
)
from distill.info import model_info
from distill.io import write_text_atomic
from distill.lightning.detection import build_detector, model_overrides
from distill.models.effdet_import import (
    EFFDET_VARIANTS,
    convert_effdet_state_dict,
    is_effdet_state_dict,
)
from distill.report import StageRows, format_report_table, log_report_to_wandb, write_report
from distill.training import (
    check_model,
    finished_metrics,
    fit,
    is_rank_zero,
    new_run_dir,
    prepare_data,
    train,
    trained_checkpoint,
)

CHANCE_MAP50 = 0.02  # a teacher below this mAP50 on the check batches is "at chance"


def derive(recipe: Recipe, changes: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with nested ``changes`` merged in (typed, like a recipe file)."""
    merged = OmegaConf.merge(OmegaConf.structured(recipe), changes)
    return OmegaConf.to_object(merged)


TEACHER_EPOCHS_FACTOR = 2  # teacher.epochs null: this many times the students' epochs


def teacher_recipe(recipe: Recipe) -> Recipe:
    """The recipe that trains the teacher: the teacher's model on the same data, for
    ``teacher.epochs`` (default: twice the students' epochs, so that the teacher-student gap
    is worth distilling)."""
    cfg = recipe.teacher
    changes: dict[str, Any] = {
        "name": f"{recipe.name}-teacher",
        "model": OmegaConf.to_container(OmegaConf.structured(cfg.model)),
        "trainer": {"epochs": cfg.epochs or TEACHER_EPOCHS_FACTOR * recipe.trainer.epochs},
    }
    if cfg.lr:
        changes["optim"] = {"lr": cfg.lr}
    if cfg.seed is not None:
        changes["seed"] = cfg.seed
    return derive(recipe, changes)


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
    """Where a teacher trained by `distill run` lives: keyed by everything that shapes it."""
    settings = recipe_to_dict(teacher_recipe(recipe))
    for key in ("name", "output_dir", "resume", "logger", "wandb_mode", "wandb_project",
                "teacher", "distill", "search"):
        settings.pop(key)
    for key in ("progress_bar", "log_every", "checkpoint_every_steps"):
        settings["trainer"].pop(key)
    settings["data"].pop("num_workers")
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


def teacher_state(recipe: Recipe, path: Path) -> dict[str, torch.Tensor]:
    """The teacher's weights (detector keys) from a `distill` checkpoint or an effdet file."""
    name = recipe.teacher.model.name
    raw = load_weights_file(path)
    if isinstance(raw, dict) and "state_dict" not in raw and is_effdet_state_dict(raw):
        if name not in EFFDET_VARIANTS:
            raise RecipeError(
                f"teacher.checkpoint {path} holds effdet weights, but teacher.model.name '{name}' "
                f"is not an effdet configuration; use one of {', '.join(EFFDET_VARIANTS)}"
            )
        return convert_effdet_state_dict(raw, variant=name)  # the file's class count
    state = read_checkpoint(path)["state_dict"]
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return model_state or state


def load_teacher(recipe: Recipe, num_classes: int, path: Path) -> nn.Module:
    """Build the teacher and load its weights strictly (``weights_only=True``) from ``path``:
    a `distill train` / `distill run` / `distill import-effdet` checkpoint or an effdet file."""
    teacher = build_detector(OmegaConf.to_container(OmegaConf.structured(recipe.teacher.model)),
                             num_classes=num_classes)
    what = (f"teacher '{recipe.teacher.model.name}' with {num_classes} classes (for effdet "
            f"weights of another class set: distill import-effdet --class-indices)")
    load_state_strict(teacher, teacher_state(recipe, path), f"teacher.checkpoint {path}", what)
    return teacher.eval()


@torch.no_grad()
def quick_map(model: nn.Module, data: DetectionDataModule, batches: int) -> dict[str, Any]:
    """COCO mAP of ``model`` (eval mode) on the first ``batches`` validation batches."""
    metric = make_map_metric()
    model.eval()
    for index, (images, targets) in enumerate(data.val_dataloader()):
        if index >= batches:
            break
        preds, gts = to_original_pixels(model.predict(model(images)), targets)
        metric.update(preds, gts)
    return summarize_map(metric.compute(), data.class_names)


def print_terms(terms: list[dict]) -> None:
    """The distillation terms of a recipe as `distill check` shows them."""
    for term in terms:
        settings = ", ".join(f"{k}={v}" for k, v in term["settings"].items()
                             if k != "options" or v)
        print(f"term {term['name']} ({term['kind']}): {settings}; weight {term['weight']}; "
              f"{term['params']} trainable params")
        for row in term.get("levels", []):
            s = f"{row['student_channels']}ch {row['student_size']}x{row['student_size']}"
            t = f"{row['teacher_channels']}ch {row['teacher_size']}x{row['teacher_size']}"
            print(f"  stride {row['stride']:>3} | student {s:>14} | teacher {t:>14} | "
                  f"{row['align']} ({row['align_params']} params)")
        for row in term.get("pairs", []):
            print(f"  {row}")


def check(recipe: Recipe, data: DetectionDataModule | None = None, batches: int = 4) -> dict:
    """Pre-flight check: level pairing, align modules, parameter counts, teacher weights, teacher
    mAP on a few validation batches. Prints a report; returns it as a dict. With
    ``distill.chain``, every link (``{"links": [...]}``)."""
    if recipe.distill.chain:
        from distill.chain import check_chain

        return check_chain(recipe, data, batches)
    check_model(recipe.model)
    check_model(recipe.teacher.model, "teacher.model")
    return check_link(recipe, data or prepare_data(recipe), batches, teacher_checkpoint(recipe))


def check_link(recipe: Recipe, data: DetectionDataModule, batches: int, path: Path | None,
               pending: str = "distill run trains it") -> dict:
    """``check`` of one teacher -> student pair, the teacher's weights at ``path`` (None: none
    yet, ``pending`` says how they will come; the teacher is built untrained to check the
    pairing)."""
    if path is not None:
        teacher = load_teacher(recipe, data.num_classes, path)
    else:
        teacher = build_detector(recipe_to_dict(recipe)["teacher"]["model"], data.num_classes)
    module = DistillationModule(recipe_to_dict(recipe), data.class_names, teacher=teacher)
    student_size = data.image_size
    teacher_size = recipe.teacher.model.image_size or student_size
    terms = [term.describe() for term in module.distiller.values()]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    report: dict[str, Any] = {
        "student": {"model": recipe.model.name, "params": count(module.model),
                    "image_size": student_size, "strides": module.model.strides},
        "teacher": {"model": recipe.teacher.model.name, "params": count(teacher),
                    "image_size": teacher_size, "strides": teacher.strides,
                    "checkpoint": str(path) if path else None},
        "distiller_params": count(module.distiller),
        "terms": terms,
    }
    print(f"student  {recipe.model.name:<20} {report['student']['params'] / 1e6:7.2f}M params"
          f"  input {student_size}")
    print(f"teacher  {recipe.teacher.model.name:<20} {report['teacher']['params'] / 1e6:7.2f}M "
          f"params  input {teacher_size}  weights: {path or f'none yet ({pending})'}")
    print_terms(terms)
    print(f"distillation terms: {report['distiller_params']} trainable params in all")
    if path is not None:
        report["teacher_check"] = quick_map(teacher, data, batches)
        map50 = report["teacher_check"]["map_50"]
        print(f"teacher on {batches} validation batches: mAP {report['teacher_check']['map']:.4f}"
              f"  mAP50 {map50:.4f}")
        report["teacher_at_chance"] = map50 < CHANCE_MAP50
        if report["teacher_at_chance"]:
            print(f"WARNING: the teacher is at chance level (mAP50 {map50:.4f} < "
                  f"{CHANCE_MAP50}): distilling from it will not help. Check the teacher "
                  f"checkpoint ({path}) and that it was trained on these classes.")
    return report


def stage_row(recipe: Recipe, model_cfg: Any, metrics: dict, num_classes: int
              ) -> dict[str, Any]:
    """One report row: accuracy from ``metrics``, size from ``distill info`` (the latency is
    measured later, every stage's model side by side: ``StageRows.time_models``)."""
    size = model_cfg.image_size or recipe.model.image_size
    overrides = model_overrides(OmegaConf.to_container(OmegaConf.structured(model_cfg)))
    info = model_info(model_cfg.name, num_classes=num_classes, image_size=size, **overrides)
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


def export_student(module: DistillationModule, recipe: Recipe, path: Path) -> Path:
    """Save the student alone, loadable by ``distill eval`` with the same recipe."""
    return write_detector_checkpoint(
        path, module.model.state_dict(),
        {"recipe": recipe_to_dict(recipe), "class_names": module.class_names})


def run_teacher(
    recipe: Recipe, num_classes: int, run_dir: Path, stage: str = "teacher"
) -> tuple[nn.Module, dict[str, Any], Path]:
    """Reuse the recipe's (or a cached) teacher checkpoint, or train one; with its metrics.
    ``stage`` names it in the log (a chain trains its teachers and middle baselines here)."""
    path = teacher_checkpoint(recipe)
    metrics: dict[str, Any] = {}
    if path is None:
        cache = teacher_cache_dir(recipe)
        print(f"== stage {stage}: training {recipe.teacher.model.name} into {cache}")
        metrics = train(teacher_recipe(recipe), run_dir=cache)
        path = trained_checkpoint(metrics, recipe.teacher.use)
    elif (path.parent.parent / "metrics.json").is_file() and not recipe.teacher.checkpoint:
        print(f"== stage {stage}: reusing {path} (same teacher recipe as an earlier run)")
        metrics = OmegaConf.to_container(OmegaConf.load(path.parent.parent / "metrics.json"))
    if not metrics or recipe.teacher.use == "best":  # a training's metrics are its last weights'
        from distill.training import evaluate

        print(f"== stage {stage}: evaluating {path}")
        metrics = {**metrics, **evaluate(teacher_recipe(recipe), path,
                                         output=run_dir / "teacher-eval.json")}
    metrics["checkpoint"] = str(path)
    return load_teacher(recipe, num_classes, path), metrics, path


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


def run_search_stage(recipe: Recipe, run_dir: Path) -> tuple[Recipe, dict[str, Any]]:
    """Search a backbone (``search`` section) into ``run_dir/search`` (or ``search.output``);
    the returned recipe's student uses the structure found. ``resume: true`` continues (or,
    when finished, just reads) the search saved there."""
    from students.nas.search import run_search, search_settings

    cfg, out_dir = search_settings(recipe)
    out_dir = out_dir if recipe.search.output else run_dir / "search"
    resume = recipe.resume and (out_dir / "population.json").is_file()
    print(f"== stage search: {cfg.candidates} candidates into {out_dir}"
          f"{' (resumed)' if resume else ''}")
    result = run_search(cfg, out_dir, resume=resume, progress=recipe.trainer.progress_bar)
    structure = str(result.files["structure"])
    searched = derive(recipe, {"model": {"options": {"structure": structure}}})
    check_model(searched.model)
    summary = {"structure": structure, "score": result.score, "candidates": result.candidates,
               "seconds": round(result.seconds, 1), **result.measures}
    return searched, summary


def run_distilled(
    recipe: Recipe, teacher: nn.Module, num_classes: int, stage_dir: Path
) -> tuple[dict[str, Any], nn.Module]:
    """Train the student with the teacher into ``stage_dir``; export ``student.ckpt``.

    With ``resume: true`` a finished stage (metrics.json and student.ckpt) is not run again and
    an unfinished one continues from its ``last.ckpt``. Returns the metrics and the student.
    """
    student_path = stage_dir / "checkpoints" / "student.ckpt"
    done = finished_metrics(recipe, stage_dir) if student_path.is_file() else None
    if done is not None:
        student = build_detector(recipe_to_dict(recipe)["model"], num_classes)
        return {**done, "checkpoint": str(student_path)}, student
    pl.seed_everything(recipe.seed, workers=True)  # the same student init as the baseline
    data = prepare_data(recipe)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stage_dir / "recipe.yaml", recipe_to_yaml(recipe))
    module = DistillationModule(recipe_to_dict(recipe), data.class_names, teacher=teacher)
    metrics = fit(derive(recipe, {"name": f"{recipe.name}-distilled"}), module, data, stage_dir)
    if is_rank_zero():  # one writer under DDP
        export_student(module, recipe, student_path)
    metrics["checkpoint"] = str(student_path)
    return metrics, module.model


def run(recipe: Recipe) -> dict[str, Any]:
    """Run the recipe's stages (teacher, baseline, distilled) and write report.json / report.md.

    The pre-flight check runs first. With ``distill.chain`` the chain's links run instead of
    the teacher stage (distill/chain.py) and the last of them teaches the student.
    """
    if recipe.distill.chain:  # a bad chain entry stops before the data is prepared
        from distill.chain import resolve_chain

        resolve_chain(recipe)
    resolve_terms(recipe.distill)  # a mistyped term stops before the data is prepared
    data = prepare_data(recipe)
    check(recipe, data)
    stages = list(recipe.distill.stages)
    run_dir = new_run_dir(recipe)
    print(f"run folder: {run_dir}")
    extra: dict[str, Any] = {"recipe": recipe.name, "run_dir": str(run_dir),
                             "terms": [t.name or t.kind for t in resolve_terms(recipe.distill)]}
    if "search" in stages:
        recipe, extra["search"] = run_search_stage(recipe, run_dir)
    write_text_atomic(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    rows = StageRows()
    teacher, student_link = None, recipe  # student_link: the recipe of the student's link
    if recipe.distill.chain and ("teacher" in stages or "distilled" in stages):
        from distill.chain import run_chain

        teacher, student_link, extra["links"] = run_chain(recipe, data.num_classes, run_dir,
                                                          rows)
    elif "teacher" in stages or "distilled" in stages:
        teacher, metrics, path = run_teacher(recipe, data.num_classes, run_dir)
        if "teacher" in stages:
            rows.add("teacher", stage_row(recipe, recipe.teacher.model, metrics,
                                          data.num_classes), teacher)
        check_teacher_quality(recipe, metrics, run_dir, rows)
    if "baseline" in stages:
        print(f"== stage baseline: {recipe.model.name} without a teacher")
        metrics = train(derive(recipe, {"name": f"{recipe.name}-baseline"}),
                        run_dir=run_dir / "baseline")
        student = build_detector(recipe_to_dict(recipe)["model"], data.num_classes)
        rows.add("baseline", stage_row(recipe, recipe.model, metrics, data.num_classes), student)
    if "distilled" in stages:
        print(f"== stage distilled: {recipe.model.name} taught by "
              f"{student_link.teacher.model.name}")
        metrics, student = run_distilled(student_link, teacher, data.num_classes,
                                         run_dir / "distilled")
        rows.add("distilled", stage_row(recipe, recipe.model, metrics, data.num_classes), student)
    extra["teacher_checkpoint"] = rows.get("teacher", {}).get("checkpoint")
    json_path = run_dir / "report.json"
    if not is_rank_zero():  # under DDP the first process writes the report
        return {"run_dir": str(run_dir), "stages": rows, "report": str(json_path)}
    rows.time_models(recipe.distill.latency_runs, recipe.trainer.channels_last)
    json_path, md_path = write_report(run_dir, rows, extra)
    if recipe.logger == "wandb":
        log_report_to_wandb(rows, run_dir, recipe.wandb_project, recipe.name, recipe.wandb_mode,
                            recipe_to_dict(recipe))
    print(format_report_table(rows))
    print(f"report: {md_path}")
    return {"run_dir": str(run_dir), "stages": rows, "report": str(json_path)}
