"""MGD: "Masked Generative Distillation" (Yang et al., ECCV 2022).

Registered as the feature loss ``mgd``: random spatial positions of the (aligned, normalised)
student map are zeroed, a small trainable generation block reconstructs the full teacher map
from what is left, and the loss is the summed squared error of that reconstruction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.distillation.losses import _check_shapes, check_options
from distill.distillation.registry import FEATURE_LOSSES


@FEATURE_LOSSES.register("mgd")
class MGDLoss(nn.Module):
    """``alpha * sum((G(S * mask) - T)^2) / N`` with G = conv3x3 -> ReLU -> conv3x3 (C -> C).

    The mask is ``[N, 1, H, W]``: each position is kept (1) with probability
    ``1 - mask_ratio`` and zeroed otherwise, the same over channels, drawn independently per
    image from torch's default generator (so Lightning's seeding makes it reproducible), in
    train and eval mode alike (the loss is a training signal).

    Options: ``alpha`` (default 2e-5, the paper's value for detectors) and ``mask_ratio``
    (0.65, the paper's). The paper's alpha is kept because on the BN-normalised (unit-variance)
    maps this repo feeds it the loss is already of order 1: the error per element is at least
    ``Var(T) = 1`` for a student that carries no information about the teacher, so the loss
    is ~``alpha * C * H * W``: 1.3 at C=64, H=W=32 and 8.2 at 80x80 (measured with a fresh G
    and N=8: 1.34 and 8.37); it falls towards 0 as G learns to predict T from the visible
    student features.
    """

    OPTIONS = ("alpha", "mask_ratio")

    def __init__(self, channels: int, alpha: float = 2e-5, mask_ratio: float = 0.65,
                 **options) -> None:
        super().__init__()
        check_options("mgd", options, self.OPTIONS)
        if not alpha >= 0:
            raise ValueError(f"mgd: alpha must be >= 0, got {alpha}")
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mgd: mask_ratio must be in [0, 1), got {mask_ratio}")
        self.alpha = float(alpha)
        self.mask_ratio = float(mask_ratio)
        self.generation = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )

    def random_mask(self, n: int, h: int, w: int, device=None) -> Tensor:
        """``[n, 1, h, w]`` float mask: 1 (kept) with probability ``1 - mask_ratio``."""
        return (torch.rand(n, 1, h, w, device=device) >= self.mask_ratio).float()

    def forward(self, student: Tensor, teacher: Tensor, boxes: list[Tensor] | None = None,
                mask: Tensor | None = None) -> Tensor:
        """The loss; ``mask`` (``[N, 1, H, W]`` or broadcastable) replaces the random one."""
        _check_shapes(student, teacher, "mgd")
        with torch.autocast(device_type=student.device.type, enabled=False):
            s = student.float()
            t = teacher.detach().float()
            n, _, h, w = s.shape
            if mask is None:
                mask = self.random_mask(n, h, w, device=s.device)
            generated = self.generation(s * mask.to(device=s.device, dtype=s.dtype))
            return self.alpha * (generated - t).pow(2).sum() / n

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, mask_ratio={self.mask_ratio}"
