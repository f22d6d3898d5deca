"""Prediction term: the teacher's class scores and boxes as targets for the student's head.

Predictions are paired level by level: a level of stride s pairs when both models have it at
the same map size with equal ``Detector.prediction_signature()`` (the same anchors per
location, or one point per location for anchor-free heads), so prediction a of the student is
prediction a of the teacher. A teacher at k times the student's input (k = 2, 4, ...) pairs its
level of stride k*s with the student's of stride s: the same map, and at k times the input the
same object has k times the size, so the teacher's anchors (or cells) there are the student's
ones scaled by k and its box outputs (relative to the anchor, or in units of the stride) need no
change; the student's levels without such a partner take no part. Otherwise (another size
ratio, other anchor settings, an anchor head against a point head) the term stops before
training and says why. Boxes are compared decoded on the student's priors, each model decoding
its own box outputs, so two heads with different box encodings pair too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distill.distillation.registry import BOX_KD_LOSSES, CLS_KD_LOSSES, TERMS
from distill.distillation.terms.base import (
    BuildContext,
    DistillTerm,
    TermConfig,
    TermInputs,
    paired_levels,
)
from distill.errors import RecipeError
from distill.models.anchors import level_sizes


@dataclass
class PredictionTermConfig(TermConfig):
    """``cls`` (soft_focal | kl) on the class logits at temperature ``tau`` (``beta``: the
    soft-focal exponent); ``box`` (giou | l1 | none) on the decoded boxes of the anchors where
    the teacher's best class score is at least ``box_min_score``, weighted by that score and by
    ``box_weight``."""

    kind: str = "prediction"
    cls: str = "soft_focal"
    box: str = "giou"
    tau: float = 1.0
    beta: float = 2.0
    box_weight: float = 1.0
    box_min_score: float = 0.05

    INHERITED: ClassVar[tuple[str, ...]] = ()  # strides: every level both models have


def model_name(model: nn.Module) -> str:
    """``preset (Family)`` of a detector, e.g. ``damo_yolo_pico (PointDetector)``."""
    name = getattr(getattr(model, "config", None), "name", None)
    return f"{name} ({type(model).__name__})" if name else type(model).__name__


def input_ratio(ctx: BuildContext) -> int:
    """How many times the student's input the teacher's is, when that is a power of two
    (1, 2, 4, ...); 0 otherwise."""
    ratio, rest = divmod(ctx.teacher_size, ctx.student_size)
    return ratio if rest == 0 and ratio & (ratio - 1) == 0 else 0


def scaled_levels(student: nn.Module, teacher: nn.Module, strides: list[int] | None,
                  ratio: int, key: str) -> tuple[list[int], list[int], list[int]]:
    """``(student strides, student levels, teacher levels)``: the student's stride s with the
    teacher's stride ``ratio * s`` (``strides`` None: every stride that has such a partner)."""
    s_strides, t_strides = list(student.strides), list(teacher.strides)
    wanted = ([s for s in s_strides if s * ratio in t_strides] if strides is None
              else list(strides))
    for stride in wanted:
        if stride not in s_strides:
            raise RecipeError(f"{key}: the student has no level at stride {stride} (its "
                              f"strides: {s_strides})")
        if stride * ratio not in t_strides:
            raise RecipeError(
                f"{key}: the teacher at {ratio}x the student's input pairs the student's stride "
                f"{stride} with its stride {stride * ratio}, which it lacks (its strides: "
                f"{t_strides}); leave that stride out")
    if not wanted:
        raise RecipeError(f"{key}: with the teacher at {ratio}x the student's input no student "
                          f"stride {s_strides} has a teacher stride {ratio}x it ({t_strides})")
    return (wanted, [s_strides.index(s) for s in wanted],
            [t_strides.index(s * ratio) for s in wanted])


def paired_predictions(ctx: BuildContext, strides: list[int] | None, key: str
                       ) -> tuple[list[int], list[int], list[int]]:
    """``(student strides, student levels, teacher levels)`` whose predictions pair one to
    one (see the module docstring)."""
    ratio = input_ratio(ctx)
    if ratio > 1:
        strides, s_levels, t_levels = scaled_levels(ctx.student, ctx.teacher, strides, ratio,
                                                    key)
    else:
        strides, s_levels, t_levels = paired_levels(ctx.student, ctx.teacher, strides, key)
    s_sig, t_sig = ctx.student.prediction_signature(), ctx.teacher.prediction_signature()
    if s_sig != t_sig:
        raise RecipeError(
            f"{key}: the student's anchors / points per location {s_sig} differ from the "
            f"teacher's {t_sig} ({model_name(ctx.student)} student, "
            f"{model_name(ctx.teacher)} teacher): predictions cannot be paired one to one, so "
            "prediction, crosskd and localization terms do not apply to this pair; a feature "
            "term (neck features, paired by stride) does")
    s_sizes = level_sizes((ctx.student_size,) * 2, ctx.student.strides)
    t_sizes = level_sizes((ctx.teacher_size,) * 2, ctx.teacher.strides)
    for stride, s_i, t_i in zip(strides, s_levels, t_levels):
        if s_sizes[s_i] != t_sizes[t_i]:
            raise RecipeError(
                f"{key}: at stride {stride} the student's map is {s_sizes[s_i]} (input "
                f"{ctx.student_size}) but the teacher's is {t_sizes[t_i]} (input "
                f"{ctx.teacher_size}): predictions pair anchor by anchor only at the same input "
                "size or a teacher input 2, 4, ... times the student's; set "
                "teacher.model.image_size so, or use a feature term")
    return strides, s_levels, t_levels


def prediction_kd(
    cfg: PredictionTermConfig,
    student_cls: Tensor,
    student_deltas: Tensor,
    teacher_cls: Tensor,
    teacher_deltas: Tensor,
    priors: Tensor,
    decode: Callable[[Tensor, Tensor], Tensor],
    teacher_decode: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """``cls`` and ``box`` distillation of paired predictions (``[B, A, K]``, ``[B, A, R]``):
    boxes are decoded on the shared ``priors`` by ``decode`` (the student's) and
    ``teacher_decode`` (the teacher's; default the same).

    cls: the element losses summed, over the teacher's soft count of objects
    ``max(1, sum_a max_k p_t)``; box: per anchor loss x (score if score >= box_min_score),
    summed over ``max(1, sum of those weights)``, times ``box_weight``.
    """
    score = torch.sigmoid(teacher_cls.float()).amax(dim=-1)  # [B, A]
    cls_elem = CLS_KD_LOSSES.get(cfg.cls)(student_cls, teacher_cls, cfg.tau, cfg.beta)
    out = {"cls": cls_elem.sum() / score.sum().clamp(min=1.0)}
    if cfg.box != "none":
        weight = torch.where(score >= cfg.box_min_score, score, torch.zeros_like(score))
        s_boxes = decode(student_deltas.float(), priors)
        t_boxes = (teacher_decode or decode)(teacher_deltas.float(), priors)
        per_box = BOX_KD_LOSSES.get(cfg.box)(s_boxes, t_boxes, priors.expand_as(s_boxes))
        out["box"] = cfg.box_weight * (per_box * weight).sum() / weight.sum().clamp(min=1.0)
    out["total"] = sum(out.values())
    return out


def check_prediction_config(cfg: PredictionTermConfig) -> None:
    """Raise ValueError naming a bad key of a prediction-level term."""
    CLS_KD_LOSSES.get(cfg.cls)
    if cfg.box != "none":
        BOX_KD_LOSSES.get(cfg.box)
    for key in ("tau",):
        if not getattr(cfg, key) > 0:
            raise ValueError(f"{key}: must be > 0, got {getattr(cfg, key)}")
    for key in ("beta", "box_weight", "box_min_score"):
        if not getattr(cfg, key) >= 0:
            raise ValueError(f"{key}: must be >= 0, got {getattr(cfg, key)}")


@TERMS.register("prediction")
class PredictionTerm(DistillTerm):
    """Class-score and box distillation on the student's own head outputs."""

    Config = PredictionTermConfig

    def __init__(self, cfg: PredictionTermConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        check_prediction_config(cfg)
        self.strides, self.student_levels, self.teacher_levels = paired_predictions(
            ctx, cfg.strides, f"distill.terms ({self.name}).strides")
        self.__dict__["models"] = (ctx.student, ctx.teacher)  # not registered: not saved twice

    def cut(self, values: Tensor, model: nn.Module, shape: tuple[int, int],
            levels: list[int]) -> Tensor:
        """The paired ``levels`` of ``model``'s prediction-axis tensor ``values``
        ``[B, A, ...]``."""
        slices = model.level_slices(shape)
        return torch.cat([values[:, slices[i]] for i in levels], dim=1)

    def priors(self, inputs: TermInputs) -> Tensor:
        """The student's priors (anchors, point cells) ``[A', 4]`` on the paired levels."""
        student = self.models[0]
        every = student.priors(inputs.student.image_shape, inputs.student.cls_logits.device)
        return self.cut(every.unsqueeze(0), student, inputs.student.image_shape,
                        self.student_levels)[0]

    def teacher_part(self, inputs: TermInputs) -> dict[str, Tensor]:
        """The teacher's ``cls`` / ``box`` outputs on the paired levels."""
        teacher, out = self.models[1], inputs.teacher
        return {key: self.cut(values, teacher, out.image_shape, self.teacher_levels)
                for key, values in (("cls", out.cls_logits), ("box", out.box_deltas))}

    def paired(self, inputs: TermInputs) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Student ``cls`` / ``box`` outputs and ``priors``, and the teacher's outputs, of the
        paired levels."""
        student, out = self.models[0], inputs.student
        s = {key: self.cut(values, student, out.image_shape, self.student_levels)
             for key, values in (("cls", out.cls_logits), ("box", out.box_deltas))}
        s["priors"] = self.priors(inputs)
        return s, self.teacher_part(inputs)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        s, t = self.paired(inputs)
        return prediction_kd(self.cfg, s["cls"], s["box"], t["cls"], t["box"], s["priors"],
                             *self.decoders())

    def decoders(self) -> tuple[Callable, Callable]:
        """The student's and the teacher's box decoding."""
        return self.models[0].decode_boxes, self.models[1].decode_boxes

    def describe(self) -> dict[str, Any]:
        t_strides = self.models[1].strides
        pairs = [f"stride {s}: student level {a} <-> teacher level {b}"
                 + (f" (stride {t_strides[b]})" if t_strides[b] != s else "")
                 for s, a, b in zip(self.strides, self.student_levels, self.teacher_levels)]
        return {**super().describe(), "pairs": pairs}
