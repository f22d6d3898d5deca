"""CrossKD term (Wang et al., CVPR 2024): the student's head features through the teacher's head.

Per paired level the student's class (box) tower output goes through a trainable 1x1 align conv
to the teacher head's width, then through the frozen teacher head's last ``teacher_layers``
tower layers and its predictor. Those cross-head predictions mimic the teacher's own (the
prediction term's losses), so the distillation gradient reaches the student's head features
without pulling its own predictor between the labels and the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distill.distillation.registry import TERMS
from distill.distillation.terms.base import BuildContext, TermInputs
from distill.distillation.terms.prediction import (
    PredictionTerm,
    PredictionTermConfig,
    prediction_kd,
)
from distill.errors import RecipeError


@dataclass
class CrossKDTermConfig(PredictionTermConfig):
    """The prediction term's keys, and how many of the teacher head's tower layers the
    student's features run through before the teacher's predictor (0: the predictor only;
    unset: 1, or 0 for a head without a tower such as DAMO-YOLO's ZeroHead)."""

    kind: str = "crosskd"
    teacher_layers: int | None = None


def align_convs(ctx: BuildContext, tap: str, pairs: list[tuple[int, int]]) -> nn.Module:
    """1x1 convs from the student's head feature ``tap`` to the teacher's, per paired level:
    one conv shared by the levels where both heads have one width at every level (anchor
    heads share their tower), else one per level (ZeroHead reads neck levels of other widths)."""
    widths = [(ctx.student.head_width(tap, s), ctx.teacher.head_width(tap, t)) for s, t in pairs]
    if len(set(widths)) == 1:
        return nn.Conv2d(*widths[0], 1)
    return nn.ModuleList(nn.Conv2d(s_w, t_w, 1) for s_w, t_w in widths)


@TERMS.register("crosskd")
class CrossKDTerm(PredictionTerm):
    """Prediction distillation through the teacher's head (CrossKD)."""

    Config = CrossKDTermConfig
    taps = ("cls_hidden", "box_hidden")

    def __init__(self, cfg: CrossKDTermConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        missing = sorted(set(self.taps) - set(type(ctx.teacher).TAPS))
        if missing:  # the student's taps are checked by DistillTerm
            raise RecipeError(
                f"a crosskd term runs the student's head features through the teacher's head, "
                f"but a {type(ctx.teacher).__name__} teacher offers no {missing}; use a "
                "prediction or feature term")
        depth = min(ctx.teacher.head_layers(tap) for tap in self.taps)
        if cfg.teacher_layers is None:
            cfg.teacher_layers = min(1, depth)
        if not 0 <= cfg.teacher_layers <= depth:
            raise ValueError(f"teacher_layers: the teacher's head has {depth} tower layers; "
                             f"expected 0..{depth}, got {cfg.teacher_layers}")
        pairs = list(zip(self.student_levels, self.teacher_levels))
        self.cls_align = align_convs(ctx, "cls_hidden", pairs)
        self.box_align = align_convs(ctx, "box_hidden", pairs)

    def cross(self, tap: str, align: nn.Module, hidden: list[Tensor]) -> Tensor:
        """The teacher's head branch of ``tap`` on the aligned student features of the paired
        levels, ``[B, A', outputs]`` (gradients flow to the student, not the head)."""
        teacher = self.models[1]
        start = teacher.head_layers(tap) - self.cfg.teacher_layers
        outs = []
        for i, (s_i, t_i) in enumerate(zip(self.student_levels, self.teacher_levels)):
            conv = align[i] if isinstance(align, nn.ModuleList) else align
            outs.append(teacher.run_head(tap, conv(hidden[s_i].float()), t_i, start))
        return torch.cat(outs, dim=1)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        taps = inputs.student.taps
        if not set(self.taps) <= set(taps):
            raise ValueError(f"crosskd: the student output has no head features; run the "
                             f"student with taps={self.taps}")
        t = self.teacher_part(inputs)  # the student's own predictions are not used here
        cross_cls = self.cross("cls_hidden", self.cls_align, taps["cls_hidden"])
        cross_box = self.cross("box_hidden", self.box_align, taps["box_hidden"])
        # the cross-head outputs are in the teacher head's box encoding
        decode = self.models[1].decode_boxes
        return prediction_kd(self.cfg, cross_cls, cross_box, t["cls"], t["box"],
                             self.priors(inputs), decode, decode)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teacher_layers": self.cfg.teacher_layers}
