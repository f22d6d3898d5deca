"""Feature term: the neck features, per level align + parameter-free BN + a feature loss."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from torch import Tensor

from distill.distillation.align import FeatureDistiller
from distill.distillation.registry import TERMS
from distill.distillation.terms.base import (
    BuildContext,
    DistillTerm,
    TermConfig,
    TermInputs,
    paired_levels,
)


@dataclass
class FeatureTermConfig(TermConfig):
    """``loss`` from FEATURE_LOSSES (cwd | mimic | fgd | mgd), its ``options`` (e.g. FGD's
    alpha, beta; ``tau`` goes to cwd), one weight per level, 1x1 align convs everywhere."""

    kind: str = "feature"
    loss: str = "cwd"
    tau: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    level_weights: Optional[list[float]] = None
    always_align: bool = True

    INHERITED: ClassVar[tuple[str, ...]] = (
        "strides", "loss", "tau", "level_weights", "always_align",
    )


@TERMS.register("feature")
class FeatureTerm(DistillTerm):
    """DAMO-YOLO's neck-feature distillation with any registered feature loss."""

    Config = FeatureTermConfig

    def __init__(self, cfg: FeatureTermConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.strides, self.student_levels, self.teacher_levels = paired_levels(
            ctx.student, ctx.teacher, cfg.strides
        )
        options = dict(cfg.options)
        if cfg.loss == "cwd":
            options.setdefault("tau", cfg.tau)
        self.levels = FeatureDistiller(
            [ctx.student.neck_channels[i] for i in self.student_levels],
            [ctx.teacher.neck_channels[i] for i in self.teacher_levels],
            loss=cfg.loss,
            options=options,
            level_weights=cfg.level_weights,
            always_align=cfg.always_align,
        )
        self.sizes = (ctx.student_size, ctx.teacher_size)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        student = [inputs.student.features[i].float() for i in self.student_levels]
        teacher = [inputs.teacher.features[i].float() for i in self.teacher_levels]
        per_level = self.levels(student, teacher, inputs.box_fractions())
        out = {"total": per_level.pop("total")}
        for i, stride in enumerate(self.strides):
            out[f"s{stride}"] = per_level[f"level{i}"]
        return out

    def describe(self) -> dict[str, Any]:
        rows = []
        for info, stride in zip(self.levels.describe(), self.strides):
            rows.append({**info, "stride": stride,
                         "student_size": math.ceil(self.sizes[0] / stride),
                         "teacher_size": math.ceil(self.sizes[1] / stride)})
        return {**super().describe(), "levels": rows}
