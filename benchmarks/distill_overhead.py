"""Benchmark: the distillation step against (student training step + teacher forward).

    .venv/bin/python benchmarks/distill_overhead.py [--recipes quickstart bccd] [--steps 6]

For each recipe, on one real batch of its training data (repeated, so data loading is out of
the picture), through Lightning as `distill train` runs it:

- student step: ``DetectionModule`` (the baseline student) forward, loss, backward, optimizer;
- teacher forward: ``DistillationModule.teacher_output`` alone (no grad, as in the step);
- distillation step: ``DistillationModule`` (student step + teacher forward + align convs,
  parameter-free BatchNorms, CWD/mimic loss, weight schedule, logging).

The ratio distill / (student + teacher) is the overhead of the distillation machinery itself
(aim <= 1.05). ``ratio_paired`` takes the teacher forward where the distillation step runs it,
right before each student step (``TeacherBeforeStep``), instead of alone in a warm loop. All
are measured in alternating rounds; medians per step. Results go to
``benchmarks/results/distill_overhead.json``. Not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from timing import median_ms, write_results
from torch.utils.data import DataLoader

from distill.config import load_recipe, recipe_to_dict
from distill.distillation.module import DistillationModule
from distill.distillation.terms import resolve_terms
from distill.lightning.detection import DetectionModule, build_detector
from distill.training import prepare_data

REPO = Path(__file__).resolve().parents[1]


class StepTimer(pl.Callback):
    """Seconds from each training batch's start to its end (optimizer step included)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class TeacherBeforeStep(pl.Callback):
    """Runs (and times) the teacher forward right before each student step, where the
    distillation step runs it: same caches and memory state as in distillation."""

    def __init__(self, teacher_forward) -> None:
        self.teacher_forward = teacher_forward
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        start = time.perf_counter()
        self.teacher_forward(batch[0])
        self.seconds.append(time.perf_counter() - start)


def timed_fit(
    module: pl.LightningModule, batch, steps: int, recipe, before: pl.Callback | None = None
) -> list[float]:
    """Per-step seconds of ``steps`` steps on ``batch`` repeated (the first one dropped);
    ``before`` runs ahead of the step timer."""
    timer = StepTimer()
    loader = DataLoader([batch] * (steps + 1), batch_size=None, collate_fn=lambda b: b)
    trainer = pl.Trainer(
        max_steps=steps + 1, limit_val_batches=0, logger=False, accelerator="cpu",
        precision=recipe.trainer.precision, gradient_clip_val=recipe.trainer.grad_clip or None,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[before, timer] if before else [timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    return timer.seconds[1:]


def timed_teacher(module: DistillationModule, images: torch.Tensor, steps: int) -> list[float]:
    """Seconds per ``teacher_output`` call (after one warm-up)."""
    module.teacher_output(images)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        module.teacher_output(images)
        seconds.append(time.perf_counter() - start)
    return seconds


def run_recipe(name: str, steps: int, rounds: int, overrides: list[str]) -> dict:
    """Student, teacher and distillation timings of one recipe."""
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", ["logger=none", *overrides])
    data = prepare_data(recipe)
    batch = next(iter(data.train_dataloader()))
    cfg = recipe_to_dict(recipe)
    torch.manual_seed(0)
    student = DetectionModule(cfg, data.class_names)
    teacher = build_detector(cfg["teacher"]["model"], data.num_classes)
    distilled = DistillationModule(cfg, data.class_names, teacher=teacher)
    names = ("student_step", "teacher_forward", "distill_step", "paired_student_step",
             "paired_teacher_forward")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        times["student_step"] += timed_fit(student, batch, steps, recipe)
        times["distill_step"] += timed_fit(distilled, batch, steps, recipe)
        times["teacher_forward"] += timed_teacher(distilled, batch[0], steps)
        paired = TeacherBeforeStep(distilled.teacher_output)
        times["paired_student_step"] += timed_fit(student, batch, steps, recipe, paired)
        times["paired_teacher_forward"] += paired.seconds[1:]
    ms = {key: median_ms(value) for key, value in times.items()}
    paired_sum = [s + t for s, t in zip(times["paired_student_step"],
                                         times["paired_teacher_forward"], strict=True)]
    return {
        "student": recipe.model.name, "teacher": recipe.teacher.model.name,
        "image_size": int(batch[0].shape[-1]), "batch": int(batch[0].shape[0]),
        "terms": [t.name or t.kind for t in resolve_terms(recipe.distill)], "ms": ms,
        "ratio": round(ms["distill_step"] / (ms["student_step"] + ms["teacher_forward"]), 3),
        "ratio_paired": round(ms["distill_step"] / median_ms(paired_sum), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["quickstart", "bccd"])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], help="key=value recipe overrides")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/distill_overhead.json"))
    args = parser.parse_args()
    results = {}
    for name in args.recipes:
        results[name] = run_recipe(name, args.steps, args.rounds, args.set)
        print(name, results[name], flush=True)
    write_results(Path(args.out), {
        "command": f"benchmarks/distill_overhead.py --recipes {' '.join(args.recipes)} "
                   f"--steps {args.steps} --rounds {args.rounds}", "recipes": results})
    print("\n| recipe | student step ms | teacher fwd ms | distill step ms | ratio | "
          "paired student + teacher ms | ratio paired |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        ms = res["ms"]
        paired = round(ms["paired_student_step"] + ms["paired_teacher_forward"], 1)
        print(f"| {name} | {ms['student_step']} | {ms['teacher_forward']} | "
              f"{ms['distill_step']} | {res['ratio']} | {paired} | {res['ratio_paired']} |")


if __name__ == "__main__":
    main()
