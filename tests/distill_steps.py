"""Shared by the distillation tests: a few optimizer steps on one repeated batch, recorded."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader


class RecordLoss(pl.Callback):
    """Per-step total loss and distillation loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.distill: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.distill.append(float(trainer.callback_metrics["train/distill_loss"]))


def fit_steps(module, batch, steps: int, precision: str = "32-true",
              callbacks: list | None = None) -> RecordLoss:
    """Train ``module`` for ``steps`` steps on ``batch`` repeated (CPU, clip 10); the record."""
    record = RecordLoss()
    loader = DataLoader([batch] * steps, batch_size=None, collate_fn=lambda b: b)
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, accelerator="cpu",
                         precision=precision, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=10.0, callbacks=[record, *(callbacks or [])],
                         log_every_n_steps=1)
    trainer.fit(module, train_dataloaders=loader)
    return record
