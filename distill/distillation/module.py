"""The LightningModule that trains a student detector with a frozen teacher's distillation terms."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from distill.config import DistillConfig, Recipe
from distill.distillation.terms import (
    BuildContext,
    TermConfig,
    TermInputs,
    build_terms,
    paired_levels,
    resolve_terms,
)
from distill.lightning.detection import DetectionModule, build_detector
from distill.models.detector import DetectorOutput

__all__ = ["DistillationModule", "freeze", "paired_levels"]


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode: a teacher that is never updated."""
    model.requires_grad_(False)
    return model.eval()


def student_view(images: torch.Tensor, targets: list[dict], size: int
                 ) -> tuple[torch.Tensor, list[dict]]:
    """A batch prepared at a teacher's larger input as the student sees it: the images resized
    to ``size`` (bilinear, antialiased), their boxes and letterbox scale scaled alike."""
    factor = size / images.shape[-1]
    small = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    scaled = [{**t, "boxes": t["boxes"] * factor,
               **({"scale": t["scale"] * factor} if "scale" in t else {})} for t in targets]
    return small, scaled


class DistillationModule(DetectionModule):
    """A ``DetectionModule`` for the student plus the recipe's distillation terms.

    The student is ``self.model`` (same checkpoint keys as a plain detector). The teacher is kept
    outside the module's registered children: it is not in ``state_dict``, not in the optimizer,
    not averaged by EMA and not wrapped by DDP; it stays frozen and in eval mode. The terms
    (``self.distiller``, by name: align convs, parameter-free BNs, loss modules, balancing
    state) are registered children: trained, saved, converted to SyncBatchNorm under DDP.
    Loss = detection + sum over terms of w_term(step) * term.

    ``terms`` are the link's resolved term configs (``resolve_terms``, once per link, by the
    stage); without them (Lightning rebuilding the module from a checkpoint's saved recipe)
    they are resolved here from the recipe's ``distill`` section.
    """

    def __init__(
        self, recipe: Recipe | dict[str, Any], class_names: list[str],
        teacher: nn.Module | None = None, terms: list[TermConfig] | None = None,
    ) -> None:
        super().__init__(recipe, class_names)
        recipe = self.hparams["recipe"]  # plain containers, as saved in the checkpoint
        if teacher is None:  # e.g. loading a checkpoint for evaluation: shapes from the recipe
            teacher = build_detector(recipe["teacher"]["model"], num_classes=len(class_names))
        self.__dict__["teacher"] = freeze(teacher)  # plain attribute: not a registered child
        self.teacher_size = recipe["teacher"]["model"].get("image_size")
        student_size = recipe["model"].get("image_size") or self.model.image_size
        self.student_size = int(student_size)
        ctx = BuildContext(self.model, teacher, int(student_size),
                           int(self.teacher_size or student_size))
        if terms is None:
            terms = resolve_terms(_distill_config(recipe["distill"]))
        self.distiller = build_terms(terms, ctx)
        # the student's intermediate outputs the terms read (e.g. CrossKD's head features)
        self.student_taps = tuple(sorted({tap for term in self.distiller.values()
                                          for tap in term.taps}))
        self.teacher_precision = recipe["teacher"].get("precision")
        teacher.set_channels_last(bool(recipe["teacher"].get("channels_last", True)))
        if recipe["trainer"].get("compile", False):
            teacher.compile()

    def train(self, mode: bool = True) -> DistillationModule:
        """Switch the student and distiller; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, recurse: bool = True):
        """Device and dtype moves (``.to``, ``.cuda``, ``.half``) reach the teacher too."""
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    @torch.no_grad()
    def teacher_output(self, images: torch.Tensor) -> DetectorOutput:
        """The teacher's raw output in float32 (input resized to the teacher's size)."""
        if self.teacher_size and self.teacher_size != images.shape[-1]:
            images = F.interpolate(
                images, size=(self.teacher_size, self.teacher_size), mode="bilinear",
                align_corners=False,
            )
        with self._teacher_autocast(images.device.type):
            out = self.teacher(images)
        return DetectorOutput(
            features=[f.float() for f in out.features], cls_logits=out.cls_logits.float(),
            box_deltas=out.box_deltas.float(), image_shape=out.image_shape,
        )

    def _teacher_autocast(self, device_type: str):
        """``teacher.precision``: bf16 autocast, float32 (autocast off) or the student's mode."""
        if self.teacher_precision == "bf16":
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        if self.teacher_precision == "32":
            return torch.autocast(device_type=device_type, enabled=False)
        return nullcontext()

    def total_steps(self) -> int:
        """Optimizer steps of the whole run (the schedules' T)."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def scheduled_weights(self) -> dict[str, float]:
        """Each term's scheduled weight at the current optimizer step (0: the term is off)."""
        total = self.total_steps()
        step = min(self.global_step, total)
        return {name: term.weight.scheduled(step, total) for name, term in self.distiller.items()}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        teacher_images = images
        if images.shape[-1] != self.student_size:  # ``teacher.input: native``
            images, targets = student_view(images, targets, self.student_size)
        scheduled = self.scheduled_weights()
        active = [name for name, w in scheduled.items() if w > 0]
        # the teacher first: its no-grad activations come and go before the student's (kept for
        # backward) fill memory and caches. Quick start on 2 CPU cores: the step went from 1.08
        # to 0.99 x (student step + teacher forward)
        teacher = self.teacher_output(teacher_images) if active else None
        output = self.model(images, taps=self.student_taps if active else ())
        det = self.model.loss(output, targets, across_ranks=True)
        logs = {name: value for name, value in det.items() if name != "loss"}
        logs["det_loss"] = det["loss"]
        loss = det["loss"]
        distill = loss.new_zeros(())
        inputs = TermInputs(output, teacher, targets, output.image_shape) if active else None
        # the terms in float32, autocast off (bf16 / fp16 students too)
        with torch.autocast(device_type=images.device.type, enabled=False):
            for name, term in self.distiller.items():
                if name not in active:  # a zero term keeps its parameters in DDP's gradient sync
                    distill = distill + sum(p.sum() for p in term.parameters()) * 0.0
                    logs[f"kd_{name}_weight"] = 0.0
                    continue
                parts = term(inputs)
                value = parts.pop("total")
                weight = term.weight(scheduled[name], value, det["loss"])
                distill = distill + weight * value
                logs[f"kd_{name}"] = value
                logs[f"kd_{name}_weight"] = weight
                logs[f"kd_{name}_ratio"] = weight * value.detach() / det["loss"].detach()
                logs.update({f"kd_{name}_{part}": v for part, v in parts.items()})
        logs["distill_loss"] = distill
        logs["distill_ratio"] = distill.detach() / det["loss"].detach()
        loss = loss + distill
        logs["loss"] = loss
        self.log_train(logs, batch_size=images.shape[0])
        return loss

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The student alone, under the keys a plain ``DetectionModule`` checkpoint uses."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("model.")}


def _distill_config(section: dict[str, Any]) -> DistillConfig:
    """The recipe's ``distill`` section (plain containers) as the typed config."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DistillConfig), section))
