"""Freeze the detector's BatchNorm statistics for the last part of training."""

from __future__ import annotations

import math

import pytorch_lightning as pl
from torch import nn


class FreezeBatchNorm(pl.Callback):
    """From epoch ``ceil(at * max_epochs)`` on, the detector's BatchNorms use (and keep) their
    running statistics while the weights go on training.

    Short from-scratch runs otherwise train under batch statistics but are evaluated under
    running ones; on images unlike the rest of a batch (a dark background, a strong texture) the
    two differ and eval-mode activations can grow layer by layer. Training the last epochs in the
    evaluation regime lets the weights adapt to it. Only ``pl_module.model`` is frozen (the
    distiller's parameter-free BNs keep normalising each batch).
    """

    def __init__(self, at: float) -> None:
        if not 0.0 < at < 1.0:
            raise ValueError(f"optim.freeze_bn_at must be in (0, 1), got {at}")
        self.at = at

    def start_epoch(self, trainer: pl.Trainer) -> int:
        """The first epoch (0-based) trained with frozen statistics."""
        return math.ceil(self.at * max(1, trainer.max_epochs or 1))

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch >= self.start_epoch(trainer):
            for module in pl_module.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A run resumed mid-epoch gets no ``on_train_epoch_start`` for that epoch."""
        self._apply(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)
