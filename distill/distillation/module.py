"""The LightningModule that trains a student detector against a frozen teacher's neck features."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.config import RecipeError
from distill.distillation.align import FeatureDistiller
from distill.distillation.schedules import WeightSchedule
from distill.lightning.detection import DetectionModule


def paired_levels(
    student: nn.Module, teacher: nn.Module, strides: list[int] | None
) -> tuple[list[int], list[int], list[int]]:
    """Pair neck levels by stride: ``(strides, student level indices, teacher level indices)``.

    ``strides`` None means every stride both models have. A stride one model lacks is an error.
    """
    s_strides, t_strides = list(student.strides), list(teacher.strides)
    wanted = [s for s in s_strides if s in t_strides] if strides is None else list(strides)
    for stride in wanted:
        for who, have in (("student", s_strides), ("teacher", t_strides)):
            if stride not in have:
                raise RecipeError(
                    f"distill.strides: the {who} has no level at stride {stride} "
                    f"(its strides: {have})"
                )
    if not wanted:
        raise RecipeError(f"distill.strides: no shared strides ({s_strides} vs {t_strides})")
    return wanted, [s_strides.index(s) for s in wanted], [t_strides.index(s) for s in wanted]


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode: a teacher that is never updated."""
    model.requires_grad_(False)
    return model.eval()


class DistillationModule(DetectionModule):
    """A ``DetectionModule`` for the student plus feature distillation from ``teacher``.

    The student is ``self.model`` (same checkpoint keys as a plain detector). The teacher is kept
    outside the module's registered children: it is not in ``state_dict``, not in the optimizer,
    not averaged by EMA and not wrapped by DDP; it stays frozen and in eval mode. The
    ``FeatureDistiller`` (align convs + parameter-free BNs) is a registered child: trained,
    saved, and converted to SyncBatchNorm under DDP. Loss = detection + w(step) * distillation.
    """

    def __init__(
        self, recipe: dict[str, Any], class_names: list[str], teacher: nn.Module | None = None
    ) -> None:
        super().__init__(recipe, class_names)
        cfg = recipe["distill"]
        if teacher is None:  # e.g. loading a checkpoint for evaluation: shapes from the recipe
            from distill.lightning.detection import build_detector

            teacher = build_detector(recipe["teacher"]["model"], num_classes=len(class_names))
        self.__dict__["teacher"] = freeze(teacher)  # plain attribute: not a registered child
        self.strides, self.student_levels, self.teacher_levels = paired_levels(
            self.model, teacher, cfg.get("strides")
        )
        self.distiller = FeatureDistiller(
            [self.model.neck_channels[i] for i in self.student_levels],
            [teacher.neck_channels[i] for i in self.teacher_levels],
            loss=cfg["loss"],
            tau=cfg["tau"],
            level_weights=cfg.get("level_weights"),
            always_align=cfg["always_align"],
        )
        w = cfg["weight"]
        self.weight_schedule = WeightSchedule(
            kind=w["schedule"],
            start=w["start"],
            end=w["end"],
            stop_at=w.get("stop_at"),
            milestones=tuple(w["milestones"]),
            gamma=w["gamma"],
        )
        self.teacher_size = recipe["teacher"]["model"].get("image_size")
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
    def teacher_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Teacher neck features at the distilled strides (input resized to the teacher's size)."""
        if self.teacher_size and self.teacher_size != images.shape[-1]:
            images = F.interpolate(
                images, size=(self.teacher_size, self.teacher_size), mode="bilinear",
                align_corners=False,
            )
        with self._teacher_autocast(images.device.type):
            features = self.teacher(images).features
        return [features[i].float() for i in self.teacher_levels]

    def _teacher_autocast(self, device_type: str):
        """``teacher.precision``: bf16 autocast, float32 (autocast off) or the student's mode."""
        if self.teacher_precision == "bf16":
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        if self.teacher_precision == "32":
            return torch.autocast(device_type=device_type, enabled=False)
        return nullcontext()

    def distill_losses(
        self, student: list[torch.Tensor], teacher: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The distiller's per-level losses, computed in float32 with autocast off."""
        with torch.autocast(device_type=student[0].device.type, enabled=False):
            return self.distiller([f.float() for f in student], [f.float() for f in teacher])

    def distill_weight(self) -> float:
        """The distillation weight at the current optimizer step."""
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return self.weight_schedule(min(self.global_step, total), total)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        weight = self.distill_weight()
        # the teacher first: its no-grad activations come and go before the student's (kept for
        # backward) fill memory and caches. Quick start on 2 CPU cores: the step went from 1.08
        # to 0.99 x (student step + teacher forward)
        teacher = self.teacher_features(images) if weight > 0 else None
        output = self.model(images)
        det = self.model.loss(output, targets, across_ranks=True)
        logs = {name: value for name, value in det.items() if name != "loss"}
        logs["det_loss"] = det["loss"]
        logs["distill_weight"] = weight
        loss = det["loss"]
        if teacher is not None:
            student = [output.features[i] for i in self.student_levels]
            per_level = self.distill_losses(student, teacher)
            distill = per_level.pop("total")
            for i, stride in enumerate(self.strides):
                logs[f"distill_s{stride}"] = per_level[f"level{i}"]
            logs["distill_loss"] = distill
            logs["distill_ratio"] = weight * distill.detach() / det["loss"].detach()
            loss = loss + weight * distill
        else:  # teacher off (stop_at): a zero term keeps the align convs in DDP's gradient sync
            loss = loss + sum(p.sum() for p in self.distiller.parameters()) * 0.0
        logs["loss"] = loss
        self.log_train(logs, batch_size=images.shape[0])
        return loss

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The student alone, under the keys a plain ``DetectionModule`` checkpoint uses."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("model.")}
