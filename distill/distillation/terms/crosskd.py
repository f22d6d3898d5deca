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


@dataclass
class CrossKDTermConfig(PredictionTermConfig):
    """The prediction term's keys, and how many of the teacher head's tower layers the
    student's features run through before the teacher's predictor (0: the predictor only)."""

    kind: str = "crosskd"
    teacher_layers: int = 1


@TERMS.register("crosskd")
class CrossKDTerm(PredictionTerm):
    """Prediction distillation through the teacher's head (CrossKD)."""

    Config = CrossKDTermConfig
    taps = ("cls_hidden", "box_hidden")

    def __init__(self, cfg: CrossKDTermConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        for head in ("class_head", "box_head"):
            layers = getattr(ctx.teacher, head).num_layers
            if not 0 <= cfg.teacher_layers <= layers:
                raise ValueError(f"teacher_layers: the teacher's {head} has {layers} tower "
                                 f"layers; expected 0..{layers}, got {cfg.teacher_layers}")
        self.cls_align = nn.Conv2d(ctx.student.class_head.width, ctx.teacher.class_head.width, 1)
        self.box_align = nn.Conv2d(ctx.student.box_head.width, ctx.teacher.box_head.width, 1)

    def cross(self, head: nn.Module, align: nn.Module, hidden: list[Tensor]) -> Tensor:
        """Predictions of the teacher's ``head`` on the aligned student tower outputs of the
        paired levels, ``[B, A', outputs]`` (gradients flow to the student, not the head)."""
        start = head.num_layers - self.cfg.teacher_layers
        outs = []
        for s_i, t_i in zip(self.student_levels, self.teacher_levels):
            x = head.run_tower(align(hidden[s_i].float()), t_i, start=start)
            outs.append(head.project(x))
        return torch.cat(outs, dim=1)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        taps = inputs.student.taps
        if not set(self.taps) <= set(taps):
            raise ValueError(f"crosskd: the student output has no head features; run the "
                             f"student with taps={self.taps}")
        t = self.teacher_part(inputs)  # the student's own predictions are not used here
        teacher = self.models[1]
        cross_cls = self.cross(teacher.class_head, self.cls_align, taps["cls_hidden"])
        cross_box = self.cross(teacher.box_head, self.box_align, taps["box_hidden"])
        # the cross-head outputs are in the teacher head's box encoding
        decode = self.models[1].decode_boxes
        return prediction_kd(self.cfg, cross_cls, cross_box, t["cls"], t["box"],
                             self.priors(inputs), decode, decode)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teacher_layers": self.cfg.teacher_layers}
