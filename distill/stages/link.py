"""A link: one teacher -> student pair, its terms resolved once, and its pre-flight check.

A recipe without ``distill.chain`` is one link (the ``teacher`` section teaches the student); a
chain ``[L, M, ...]`` is one link per entry (L -> M, ..., the last -> the student).
``recipe_links`` builds them before the data is prepared, so a bad entry or term stops first;
every stage of the link then uses its ``terms`` (``resolve_terms`` runs once per link).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.config import Recipe
from distill.data import DetectionDataModule
from distill.distillation.defaults import terms_note
from distill.distillation.module import DistillationModule
from distill.distillation.terms import TermConfig, resolve_terms
from distill.errors import RecipeError
from distill.evaluation import make_map_metric, summarize_map, to_original_pixels
from distill.lightning.detection import build_detector
from distill.stages.chain import ChainEntry, link_recipe, resolve_chain
from distill.stages.teacher import CHANCE_MAP50, load_teacher, teacher_checkpoint
from distill.training import check_model, prepare_data, resolve_image_size


@dataclass
class Link:
    """One teacher -> student pair. ``teacher`` / ``student`` are chain entries (None: the
    recipe's ``teacher`` section / its student); ``terms`` the link's resolved terms."""

    number: int
    teacher: ChainEntry | None
    student: ChainEntry | None
    terms: list[TermConfig]
    last: bool = True

    def recipe(self, recipe: Recipe, checkpoint: str | Path | None = None, **changes: Any
               ) -> Recipe:
        """The link's single-teacher recipe (the recipe itself without a chain), the teacher's
        weights at ``checkpoint``."""
        if self.teacher is None:
            return recipe
        student = self.student.model if self.student else recipe.model
        return link_recipe(recipe, self.teacher, student, checkpoint, **changes)

    @property
    def term_names(self) -> list[str]:
        """The names of its terms (the report's ``terms``)."""
        return [t.name or t.kind for t in self.terms]

    def who(self, recipe: Recipe) -> str:
        """``link N: teacher (its key) -> student (its key)`` for logs and errors."""
        student = self.student.spec.name if self.student else recipe.model.name
        where = self.student.key if self.student else "the student"
        return (f"link {self.number}: {self.teacher.spec.name} ({self.teacher.key}) -> "
                f"{student} ({where})")


def recipe_links(recipe: Recipe) -> list[Link]:
    """The recipe's links, checked (chain entries; each link's terms, resolved once here)."""
    entries = resolve_chain(recipe)
    if not entries:
        return [Link(1, None, None, resolve_terms(recipe.distill))]
    links = []
    for number, (teacher, student) in enumerate(zip(entries, [*entries[1:], None]), 1):
        distill = link_recipe(recipe, teacher, recipe.model, None).distill
        try:
            terms = resolve_terms(distill)
        except RecipeError as err:
            if teacher.spec.terms is None:  # the distill section's own terms
                raise
            raise RecipeError(f"{teacher.key}.terms: {err}") from err
        links.append(Link(number, teacher, student, terms, last=student is None))
    return links


def check_links(recipe: Recipe, links: list[Link], data: DetectionDataModule | None,
                batches: int) -> dict[str, Any]:
    """``distill check`` of every link, first to last: without a chain the one link's report;
    with one ``{"links": [...], "teacher_at_chance": ...}``, a link that cannot be distilled with
    its terms stops with a ``RecipeError`` naming the link."""
    check_model(recipe.model)
    if links[0].teacher is None:
        check_model(recipe.teacher.model, "teacher.model")
        return check_link(recipe, data or prepare_data(recipe), batches,
                          teacher_checkpoint(recipe), links[0].terms)
    reports = []
    for link in links:
        print(f"== {link.who(recipe)}")
        teacher = link.teacher
        single = link.recipe(recipe, teacher.spec.checkpoint)
        path = teacher_checkpoint(single) if teacher.index == 0 or teacher.spec.checkpoint else None
        same_size = data is not None and resolve_image_size(single) == data.image_size
        pending = (f"distill run distils it in link {link.number - 1}" if teacher.index
                   else "distill run trains it")
        try:
            report = check_link(single, data if same_size else prepare_data(single), batches,
                                path, link.terms, pending)
        except RecipeError as err:
            raise RecipeError(f"distill.chain {link.who(recipe)}: {err} (the link's terms: "
                              f"{teacher.key}.terms, default distill.terms)") from err
        reports.append({"link": link.number, "teacher_key": teacher.key, **report})
    # `distill check` exits 1 when a teacher with weights is at chance level, in any link
    return {"links": reports,
            "teacher_at_chance": any(r.get("teacher_at_chance") for r in reports)}


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


def teacher_input_size(recipe: Recipe) -> int | None:
    """The training images' size under ``teacher.input: native`` (the teacher's, when larger
    than the student's); None: the student's."""
    if recipe.teacher.input != "native":
        return None
    student = resolve_image_size(recipe)
    teacher = recipe.teacher.model.image_size or student
    if teacher < student:
        raise RecipeError(
            f"teacher.input: native prepares the training images at the teacher's size and "
            f"shrinks them for the student, but the teacher's teacher.model.image_size "
            f"({teacher}) is smaller than the student's ({student}); use resized")
    return teacher if teacher > student else None


def check_link(recipe: Recipe, data: DetectionDataModule, batches: int, path: Path | None,
               terms: list[TermConfig], pending: str = "distill run trains it") -> dict:
    """The check of one single-teacher ``recipe`` with its ``terms``: level pairing, align
    modules, parameter counts, teacher weights at ``path`` and their mAP on ``batches``
    validation batches (None: none yet, ``pending`` says how they will come; the teacher is
    built untrained to check the pairing). Prints a report; returns it as a dict."""
    if path is not None:
        teacher = load_teacher(recipe, data.num_classes, path, data.class_names)
    else:
        teacher = build_detector(recipe.teacher.model, data.num_classes)
    module = DistillationModule(recipe, data.class_names, teacher=teacher, terms=terms)
    student_size = data.image_size
    teacher_size = recipe.teacher.model.image_size or student_size
    native = teacher_input_size(recipe)
    described = [term.describe() for term in module.distiller.values()]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    report: dict[str, Any] = {
        "student": {"model": recipe.model.name, "params": count(module.model),
                    "image_size": student_size, "strides": module.model.strides},
        "teacher": {"model": recipe.teacher.model.name, "params": count(teacher),
                    "image_size": teacher_size, "strides": teacher.strides,
                    "checkpoint": str(path) if path else None},
        "distiller_params": count(module.distiller),
        "terms": described,
    }
    print(f"student  {recipe.model.name:<20} {report['student']['params'] / 1e6:7.2f}M params"
          f"  input {student_size}")
    print(f"teacher  {recipe.teacher.model.name:<20} {report['teacher']['params'] / 1e6:7.2f}M "
          f"params  input {teacher_size}  weights: {path or f'none yet ({pending})'}")
    if teacher_size != student_size:
        print(f"  teacher input: {recipe.teacher.input}: " + (
            f"training images prepared at {teacher_size} px for the teacher, resized to "
            f"{student_size} for the student" if native else
            f"the student's {student_size} px batch resized to {teacher_size}"))
    for role, model in (("student", module.model), ("teacher", teacher)):
        report[role]["head"] = model.describe_head()
        for key, line in report[role]["head"].items():
            print(f"  {role} {key}: {line}")
    print_terms(described)
    print(f"distillation terms: {report['distiller_params']} trainable params in all")
    report["terms_note"] = terms_note(recipe.distill)
    print(report["terms_note"])
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
