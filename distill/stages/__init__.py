"""The stages of `distill run`, one interface (``Stage.run(ctx) -> StageResult``): ``search``,
``teacher``, a chain's middles, ``baseline``, ``distilled``; the links they distil
(``Link``: a teacher -> student pair, its terms resolved once) and their pre-flight check."""

from distill.stages.base import RunContext, Stage, StageResult, Teacher, derive, stage_row
from distill.stages.chain import ChainEntry, ChainSpec, link_recipe, resolve_chain
from distill.stages.distilled import BaselineStage, DistilledStage, export_student, run_distilled
from distill.stages.link import Link, check_link, check_links, recipe_links
from distill.stages.middle import MiddleStage
from distill.stages.search import SearchStage
from distill.stages.teacher import (
    TeacherStage,
    check_teacher_quality,
    load_teacher,
    obtain_teacher,
    teacher_cache_dir,
    teacher_checkpoint,
    teacher_recipe,
)

__all__ = [
    "BaselineStage",
    "ChainEntry",
    "ChainSpec",
    "DistilledStage",
    "Link",
    "MiddleStage",
    "RunContext",
    "SearchStage",
    "Stage",
    "StageResult",
    "Teacher",
    "TeacherStage",
    "check_link",
    "check_links",
    "check_teacher_quality",
    "derive",
    "export_student",
    "link_recipe",
    "load_teacher",
    "obtain_teacher",
    "recipe_links",
    "resolve_chain",
    "run_distilled",
    "stage_row",
    "teacher_cache_dir",
    "teacher_checkpoint",
    "teacher_recipe",
]
