"""Prediction-level distillation losses: teacher class scores as soft targets, teacher boxes.

Class losses (``CLS_KD_LOSSES``) take student and teacher logits ``[..., K]`` and return the
loss per element (same shape); box losses (``BOX_KD_LOSSES``) take decoded student and teacher
boxes ``[..., 4]`` (xyxy) and the anchors, and return the loss per box ``[...]``. The term
weights and normalises them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from distill.distillation.registry import BOX_KD_LOSSES, CLS_KD_LOSSES


@CLS_KD_LOSSES.register("soft_focal")
def soft_focal_kd(student: Tensor, teacher: Tensor, tau: float = 1.0, beta: float = 2.0) -> Tensor:
    """Quality-focal style KD: ``BCE(sigmoid(s / tau), p_t) * |sigmoid(s / tau) - p_t|**beta
    * tau**2`` with ``p_t = sigmoid(t / tau)``. The modulating factor makes the many background
    anchors where student and teacher agree weigh almost nothing; exactly 0 when ``s == t``."""
    p_t = torch.sigmoid(teacher.float() / tau)
    z = student.float() / tau
    bce = F.binary_cross_entropy_with_logits(z, p_t, reduction="none")
    return bce * (torch.sigmoid(z) - p_t).abs().pow(beta) * tau**2


@CLS_KD_LOSSES.register("kl")
def binary_kl_kd(student: Tensor, teacher: Tensor, tau: float = 1.0, beta: float = 2.0) -> Tensor:
    """Per-class binary KL(p_t || p_s) at temperature ``tau`` (times ``tau**2``); ``beta``
    unused. BCE minus the teacher's entropy, so exactly 0 when ``s == t``."""
    t = teacher.float() / tau
    p_t = torch.sigmoid(t)
    bce = F.binary_cross_entropy_with_logits(student.float() / tau, p_t, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(t, p_t, reduction="none")
    return (bce - entropy) * tau**2


@BOX_KD_LOSSES.register("giou")
def giou_kd(student: Tensor, teacher: Tensor, anchors: Tensor) -> Tensor:
    """1 - GIoU between student and teacher boxes (torchvision), per box."""
    return generalized_box_iou_loss(student.float(), teacher.float(), reduction="none")


@BOX_KD_LOSSES.register("l1")
def l1_kd(student: Tensor, teacher: Tensor, anchors: Tensor) -> Tensor:
    """L1 distance of the box corners in units of the anchor's width / height, per box."""
    wh = (anchors[..., 2:] - anchors[..., :2]).clamp(min=1e-6)
    wh = torch.cat([wh, wh], dim=-1)
    return ((student.float() - teacher.float()).abs() / wh).sum(dim=-1)
