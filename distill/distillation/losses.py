"""Feature distillation losses: mimic (MSE) and channel-wise distillation (CWD)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor


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


FEATURE_LOSSES: dict[str, Callable[..., Tensor]] = {"mimic": mimic_loss, "cwd": cwd_loss}


def feature_loss(name: str, tau: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss function called ``name`` as a two-argument callable (``tau`` is used by cwd)."""
    if name not in FEATURE_LOSSES:
        raise ValueError(
            f"unknown feature loss '{name}'; valid: {', '.join(sorted(FEATURE_LOSSES))}"
        )
    if name == "cwd":
        if not tau > 0:
            raise ValueError(f"cwd: tau must be > 0, got {tau}")
        return partial(cwd_loss, tau=tau)
    return FEATURE_LOSSES[name]
