"""`distill check` and `distill run`: the recipe's links checked, then its stages run in order.

The stages (``distill/stages/``): ``search`` (optional, first), ``teacher`` (the teacher
section's, or a chain's first entry), a chain's ``middle<i>`` links, ``baseline``,
``distilled``. Each returns its report rows and the teacher it hands on; this module keeps the
run folder, the teacher-quality gate between stages and the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distill.config import Recipe, recipe_to_dict, recipe_to_yaml
from distill.data import DetectionDataModule
from distill.io import write_text_atomic
from distill.locks import folder_lock
from distill.report import format_report_table, log_report_to_wandb, write_report
from distill.stages import (
    BaselineStage,
    DistilledStage,
    Link,
    MiddleStage,
    RunContext,
    SearchStage,
    Stage,
    TeacherStage,
    check_links,
    check_teacher_quality,
    recipe_links,
)
from distill.training import WANDB_GROUP_ENV, is_rank_zero, new_run_dir, prepare_data


def check(recipe: Recipe, data: DetectionDataModule | None = None, batches: int = 4) -> dict:
    """Pre-flight check: level pairing, align modules, parameter counts, teacher weights, teacher
    mAP on a few validation batches. Prints a report; returns it as a dict. With
    ``distill.chain``, every link (``{"links": [...]}``)."""
    return check_links(recipe, recipe_links(recipe), data, batches)


def plan(recipe: Recipe, links: list[Link]) -> list[Stage]:
    """The stages ``distill.stages`` asks for, in order; a chain's middles before the student's
    (a distilled stage needs the teacher of its link, so the teacher stage runs for it too)."""
    wanted = list(recipe.distill.stages)
    stages: list[Stage] = [SearchStage()] if "search" in wanted else []
    if "teacher" in wanted or "distilled" in wanted:
        stages.append(TeacherStage(links[0].teacher, report="teacher" in wanted))
        stages += [MiddleStage(link) for link in links if not link.last]
    if "baseline" in wanted:
        stages.append(BaselineStage())
    if "distilled" in wanted:
        stages.append(DistilledStage(links[-1]))
    return stages


def run_stages(ctx: RunContext, stages: list[Stage], extra: dict[str, Any]) -> list[dict]:
    """Run ``stages`` in order: their rows into ``ctx.rows``, their extras into ``extra``; a
    stage's teacher passes the quality gate before the next stage; a stage's recipe (the
    search's) is the later stages' (and ``recipe.yaml``). Returns the chain links run."""
    links = []
    for stage in stages:
        result = stage.run(ctx)
        for name, row, model in result.rows:
            ctx.rows.add(name, row, model)
        extra.update(result.extra)
        if result.link is not None:
            links.append(result.link)
        if result.recipe is not None:
            ctx.recipe = result.recipe
            write_text_atomic(ctx.run_dir / "recipe.yaml", recipe_to_yaml(ctx.recipe))
        if result.teacher is not None:
            ctx.teacher = result.teacher
            check_teacher_quality(ctx.recipe, result.teacher.metrics, ctx.run_dir, ctx.rows)
    return links


def run(recipe: Recipe) -> dict[str, Any]:
    """Run the recipe's stages (search, teacher, chain middles, baseline, distilled) and write
    report.json / report.md. Every link is checked first (``check``); a bad chain entry or term
    stops before the data is prepared."""
    links = recipe_links(recipe)
    data = prepare_data(recipe)
    check_links(recipe, links, data, batches=4)
    stages = plan(recipe, links)
    run_dir = new_run_dir(recipe)
    group = os.environ.get(WANDB_GROUP_ENV)
    os.environ[WANDB_GROUP_ENV] = group or f"{recipe.name}:{run_dir.name}"  # one W&B group
    try:
        with folder_lock(run_dir):  # a second run on this folder stops here, naming this one
            return _run_stages(recipe, links, data, stages, run_dir)
    finally:
        if group is None:
            os.environ.pop(WANDB_GROUP_ENV, None)


def _run_stages(recipe: Recipe, links: list, data: DetectionDataModule, stages: list,
                run_dir: Path) -> dict[str, Any]:
    print(f"run folder: {run_dir}")
    extra: dict[str, Any] = {"recipe": recipe.name, "run_dir": str(run_dir),
                             "terms": links[-1].term_names}
    write_text_atomic(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    ctx = RunContext(recipe, data, run_dir)
    chain_links = run_stages(ctx, stages, extra)
    if links[0].teacher is not None and any(isinstance(s, TeacherStage) for s in stages):
        last = links[-1]
        extra["links"] = [*chain_links, {"teacher": last.teacher.stage, "student": "distilled",
                                         "baseline": "baseline", "terms": last.term_names}]
    extra["teacher_checkpoint"] = ctx.rows.get("teacher", {}).get("checkpoint")
    return report(ctx, extra)


def report(ctx: RunContext, extra: dict[str, Any]) -> dict[str, Any]:
    """Time every stage's model, write report.json / report.md (rank zero under DDP), log the
    table to W&B when that is the logger; ``{"run_dir", "stages", "report"}``."""
    recipe, rows, json_path = ctx.recipe, ctx.rows, ctx.run_dir / "report.json"
    if is_rank_zero():  # under DDP the first process writes the report
        rows.time_models(recipe.distill.latency_runs, recipe.trainer.channels_last)
        json_path, md_path = write_report(ctx.run_dir, rows, extra)
        if recipe.logger == "wandb":
            log_report_to_wandb(rows, ctx.run_dir, recipe.wandb_project, recipe.name,
                                recipe.wandb_mode, recipe_to_dict(recipe))
        print(format_report_table(rows))
        print(f"report: {md_path}")
    return {"run_dir": str(ctx.run_dir), "stages": rows, "report": str(json_path)}
