"""Feature distillation losses: mimic (MSE) and channel-wise distillation (CWD).

Each feature loss is registered in ``FEATURE_LOSSES`` as a per-level ``nn.Module`` built with
``(channels, **options)`` and called as ``loss(student, teacher, boxes)``: the aligned and
normalised student map, the normalised teacher map (both ``[N, C, H, W]``) and, for losses that
need them, the ground-truth boxes of each image as fractions of the image (``[n_i, 4]`` xyxy).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillation.registry import FEATURE_LOSSES


def _check_shapes(student: Tensor, teacher: Tensor, name: str) -> None:
    """Raise ValueError naming both shapes when they differ or are not [N, C, H, W]."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"{name}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}"
        )
    if student.dim() != 4:
        raise ValueError(
            f"{name}: expected [N, C, H, W] tensors, got student shape {tuple(student.shape)} "
            f"and teacher shape {tuple(teacher.shape)}"
        )


def mimic_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error between two [N, C, H, W] feature maps (computed in float32)."""
    _check_shapes(student, teacher, "mimic_loss")
    return F.mse_loss(student.float(), teacher.float(), reduction="mean")


def cwd_loss(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """Channel-wise distillation: KL(teacher || student) of per-channel spatial softmaxes.

    Each map is reshaped to (N*C, H*W) and softmaxed over the spatial axis at temperature
    ``tau``; the KL divergence is summed over all rows and positions, multiplied by ``tau**2``
    and divided by N*C. Computed in float32; exactly 0 for identical inputs.
    """
    _check_shapes(student, teacher, "cwd_loss")
    if not tau > 0:
        raise ValueError(f"cwd_loss: tau must be > 0, got {tau}")
    n, c, h, w = student.shape
    s = student.float().reshape(n * c, h * w) / tau
    t = teacher.float().reshape(n * c, h * w) / tau
    log_p_s = F.log_softmax(s, dim=1)
    log_p_t = F.log_softmax(t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl * (tau**2) / (n * c)


def check_options(name: str, options: dict, valid: tuple[str, ...]) -> None:
    """Raise ValueError naming an unknown option of loss ``name`` and the valid ones."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; valid: {list(valid) or 'none'}")


@FEATURE_LOSSES.register("mimic")
class MimicLoss(nn.Module):
    """``mimic_loss`` as a per-level module (no options)."""

    def __init__(self, channels: int, **options) -> None:
        super().__init__()
        check_options("mimic", options, ())

    def forward(self, student: Tensor, teacher: Tensor, boxes=None) -> Tensor:
        return mimic_loss(student, teacher)


@FEATURE_LOSSES.register("cwd")
class CWDLoss(nn.Module):
    """``cwd_loss`` as a per-level module; option ``tau`` (temperature, default 1.0)."""

    def __init__(self, channels: int, tau: float = 1.0, **options) -> None:
        super().__init__()
        check_options("cwd", options, ())
        if not tau > 0:
            raise ValueError(f"cwd: tau must be > 0, got {tau}")
        self.tau = float(tau)

    def forward(self, student: Tensor, teacher: Tensor, boxes=None) -> Tensor:
        return cwd_loss(student, teacher, self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
