"""Per-level student->teacher alignment, parameter-free normalisation and feature loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillation.registry import FEATURE_LOSSES


class FeatureDistiller(nn.Module):
    """Distil neck features level by level, as in DAMO-YOLO.

    Per level ``i``: the student map goes through ``align[i]`` (a trainable 1x1 conv with bias
    from student to teacher channels, or ``nn.Identity`` when the channels are equal and
    ``always_align`` is False), is bilinearly resized to the teacher's spatial size if needed,
    and then the *same* parameter-free ``norm[i]`` (``BatchNorm2d(affine=False)``) normalises
    both the aligned student map and the detached teacher map before the feature loss
    ``losses[i]``, one module per level from ``FEATURE_LOSSES`` (``loss`` with ``options``).

    BN statistics: in train mode ``norm[i]`` normalises each input with its own batch statistics
    and updates its running mean/var on both calls (student then teacher), so the running
    stats are an average over both streams; in eval mode the running stats are used. This
    follows the reference implementation. The norms are registered modules, so their running
    stats are saved in ``state_dict`` and ``nn.SyncBatchNorm.convert_sync_batchnorm`` converts
    them. Note a train-mode BN needs more than one value per channel (N*H*W > 1).
    """

    def __init__(
        self,
        student_channels: list[int],
        teacher_channels: list[int],
        loss: str = "cwd",
        options: dict | None = None,
        level_weights: list[float] | None = None,
        always_align: bool = True,
    ) -> None:
        super().__init__()
        student_channels = [int(c) for c in student_channels]
        teacher_channels = [int(c) for c in teacher_channels]
        if len(student_channels) != len(teacher_channels):
            raise ValueError(
                f"student_channels has {len(student_channels)} levels but teacher_channels has "
                f"{len(teacher_channels)}; they must be paired level by level"
            )
        if not student_channels:
            raise ValueError("FeatureDistiller needs at least one pyramid level")
        if any(c <= 0 for c in student_channels + teacher_channels):
            raise ValueError(
                f"channel counts must be positive: student {student_channels}, "
                f"teacher {teacher_channels}"
            )
        if level_weights is None:
            level_weights = [1.0] * len(teacher_channels)
        if len(level_weights) != len(teacher_channels):
            raise ValueError(
                f"level_weights has {len(level_weights)} entries but there are "
                f"{len(teacher_channels)} levels"
            )
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.loss_name = loss
        self.level_weights = [float(w) for w in level_weights]
        self.always_align = always_align
        loss_cls = FEATURE_LOSSES.get(loss)
        self.losses = nn.ModuleList(loss_cls(t, **(options or {})) for t in teacher_channels)
        self.align = nn.ModuleList(
            nn.Conv2d(s, t, kernel_size=1, bias=True) if (s != t or always_align) else nn.Identity()
            for s, t in zip(student_channels, teacher_channels)
        )
        self.norm = nn.ModuleList(nn.BatchNorm2d(t, affine=False) for t in teacher_channels)

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.teacher_channels)

    def _check(self, feats: list[Tensor], expected: list[int], who: str) -> None:
        """Raise ValueError when the number of maps or a level's channel count is wrong."""
        if len(feats) != self.num_levels:
            raise ValueError(
                f"got {len(feats)} {who} feature maps but the distiller has "
                f"{self.num_levels} levels"
            )
        for i, (f, c) in enumerate(zip(feats, expected)):
            if f.dim() != 4:
                raise ValueError(
                    f"level {i}: {who} feature must be [N, C, H, W], got shape {tuple(f.shape)}"
                )
            if f.shape[1] != c:
                raise ValueError(
                    f"level {i}: {who} feature has {f.shape[1]} channels but the distiller was "
                    f"built for {c} (student {self.student_channels[i]} -> "
                    f"teacher {self.teacher_channels[i]})"
                )

    def forward(
        self,
        student_feats: list[Tensor],
        teacher_feats: list[Tensor],
        boxes: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Per-level weighted losses ``{"level0": ..., ..., "total": sum}``; ``boxes`` (per
        image ``[n, 4]`` xyxy as fractions of the image) go to losses that use them."""
        self._check(student_feats, self.student_channels, "student")
        self._check(teacher_feats, self.teacher_channels, "teacher")
        out: dict[str, Tensor] = {}
        total: Tensor | None = None
        for i, (sf, tf) in enumerate(zip(student_feats, teacher_feats)):
            if sf.shape[0] != tf.shape[0]:
                raise ValueError(
                    f"level {i}: student batch {sf.shape[0]} != teacher batch {tf.shape[0]}"
                )
            x = self.align[i](sf)
            if x.shape[-2:] != tf.shape[-2:]:
                x = F.interpolate(x, size=tf.shape[-2:], mode="bilinear", align_corners=False)
            s = self.norm[i](x)
            t = self.norm[i](tf.detach())
            level = self.level_weights[i] * self.losses[i](s, t, boxes)
            out[f"level{i}"] = level
            total = level if total is None else total + level
        assert total is not None
        out["total"] = total
        return out

    def describe(self) -> list[dict]:
        """One summary dict per level: channels, align kind and its parameter count."""
        rows = []
        pairs = zip(self.student_channels, self.teacher_channels, self.align)
        for i, (s, t, a) in enumerate(pairs):
            rows.append(
                {
                    "level": i,
                    "student_channels": s,
                    "teacher_channels": t,
                    "align": "identity" if isinstance(a, nn.Identity) else "conv1x1",
                    "align_params": sum(p.numel() for p in a.parameters()),
                }
            )
        return rows

    def extra_repr(self) -> str:
        return f"loss={self.loss_name}, level_weights={self.level_weights}"
