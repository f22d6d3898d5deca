"""Exponential moving average of the weights, as a Lightning ``WeightAveraging`` callback."""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import WeightAveraging


def warmup_ema_avg_fn(decay: float):
    """An ``AveragedModel`` average function whose decay ramps up as ``(1 + n) / (10 + n)``.

    With a fixed decay of 0.9998 a short run would keep the initial weights; the ramp (as in the
    TensorFlow EfficientDet code) makes the average useful from the first steps on.
    """

    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor):
        if not averaged.is_floating_point():  # counters such as BatchNorm's num_batches_tracked
            return current.clone()
        # on the device, as a tensor: no host-device sync per parameter
        n = num_averaged.to(averaged.dtype)
        beta = ((1.0 + n) / (10.0 + n)).clamp(max=decay)
        return averaged.lerp(current, 1.0 - beta)

    return avg_fn


class WarmupEMA(WeightAveraging):
    """EMA of all weights and buffers, updated every optimizer step, used for validation.

    Checkpoints hold the averaged weights under ``state_dict`` (Lightning's convention), so an
    exported or evaluated checkpoint is the EMA model.
    """

    def __init__(self, decay: float = 0.9998) -> None:
        super().__init__(use_buffers=True, avg_fn=warmup_ema_avg_fn(decay))
        self.decay = decay
