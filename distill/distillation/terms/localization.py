"""Localization distillation (LD, Zheng et al., CVPR 2022): the teacher's box distributions as
soft targets for the student's.

For heads whose box outputs are per-side distributions over ``reg_max + 1`` bins (GFL / DFL
heads, e.g. DAMO-YOLO's ZeroHead): per paired prediction and side, KL(teacher || student) of the
two distributions softened at temperature ``tau`` (times ``tau**2``), averaged over the four
sides, weighted by the teacher's quality score (its best sigmoid class score, kept where at least
``min_score``) and summed over ``max(1, sum of the weights)``. Predictions pair as in the
prediction term (same map sizes, equal ``prediction_signature()``); both heads must have the
same bins, else the term is refused before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.distillation.registry import TERMS
from distill.distillation.terms.base import BuildContext, DistillTerm, TermConfig, TermInputs
from distill.distillation.terms.prediction import paired_predictions
from distill.errors import RecipeError


@dataclass
class LocalizationTermConfig(TermConfig):
    """``tau``: the softening temperature (LD: 10); ``min_score``: predictions whose teacher
    quality score is below it get no weight."""

    kind: str = "localization"
    tau: float = 10.0
    min_score: float = 0.0

    INHERITED: ClassVar[tuple[str, ...]] = ()  # strides: every level both models have


def localization_kd(student: Tensor, teacher: Tensor, weight: Tensor, tau: float) -> Tensor:
    """LD of box distributions ``[B, N, 4 * bins]`` with per-prediction ``weight`` ``[B, N]``."""
    batch, count, width = student.shape
    shape = (batch, count, 4, width // 4)
    log_s = F.log_softmax(student.float().reshape(shape) / tau, dim=-1)
    log_t = F.log_softmax(teacher.float().reshape(shape) / tau, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1).mean(dim=-1) * tau**2  # [B, N]
    return (kl * weight).sum() / weight.sum().clamp(min=1.0)


@TERMS.register("localization")
class LocalizationTerm(DistillTerm):
    """Localization distillation of DFL box distributions, weighted by the teacher's quality."""

    Config = LocalizationTermConfig

    def __init__(self, cfg: LocalizationTermConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        if not cfg.tau > 0:
            raise ValueError(f"tau: must be > 0, got {cfg.tau}")
        where = f"distill.terms ({self.name})"
        bins = (ctx.student.box_bins(), ctx.teacher.box_bins())
        if bins[0] is None or bins[0] != bins[1]:
            raise RecipeError(
                f"{where}: localization distillation compares per-side box distributions of "
                f"equal bins; the student ({type(ctx.student).__name__}) has {bins[0]}, the "
                f"teacher ({type(ctx.teacher).__name__}) {bins[1]} (None: no distribution "
                "head); use a prediction term with box: giou, or a feature term")
        self.strides, self.student_levels, self.teacher_levels = paired_predictions(
            ctx, cfg.strides, f"{where}.strides")
        self.__dict__["models"] = (ctx.student, ctx.teacher)  # not registered: not saved twice

    def _cut(self, values: Tensor, which: int, shape: tuple[int, int]) -> Tensor:
        slices = self.models[which].level_slices(shape)
        levels = self.student_levels if which == 0 else self.teacher_levels
        return torch.cat([values[:, slices[i]] for i in levels], dim=1)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        s_out, t_out = inputs.student, inputs.teacher
        student = self._cut(s_out.box_deltas, 0, s_out.image_shape)
        teacher = self._cut(t_out.box_deltas, 1, t_out.image_shape)
        score = torch.sigmoid(self._cut(t_out.cls_logits, 1, t_out.image_shape).float())
        score = score.amax(dim=-1)
        weight = torch.where(score >= self.cfg.min_score, score, torch.zeros_like(score))
        return {"total": localization_kd(student, teacher, weight, self.cfg.tau)}

    def describe(self) -> dict[str, Any]:
        pairs = [f"stride {s}: student level {a} <-> teacher level {b}"
                 for s, a, b in zip(self.strides, self.student_levels, self.teacher_levels)]
        return {**super().describe(), "pairs": pairs}
