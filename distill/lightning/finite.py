"""Stop a run whose training loss is no longer finite, loudly, before it writes NaN weights."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from distill.errors import TrainingDiverged
from distill.lightning.resume import LastCheckpoint


def _loss_of(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


class StopOnNonFiniteLoss(pl.Callback):
    """Raise ``TrainingDiverged`` at the first optimizer step whose loss is NaN or infinite,
    naming the step, the learning rate and the last checkpoint written before it (kept: no
    checkpoint is written after a non-finite step)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = _loss_of(outputs)
        if loss is None:
            return
        value = float(loss.detach())
        if math.isfinite(value):
            return
        lrs = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        last = next((str(cb.path) for cb in trainer.callbacks
                     if isinstance(cb, LastCheckpoint) and cb.path.is_file()), "none yet")
        raise TrainingDiverged(
            f"step {trainer.global_step} (epoch {trainer.current_epoch + 1}, batch "
            f"{batch_idx}): the training loss is {value}; the run stops. Likely causes: a "
            f"learning rate too high for this model and batch (now {max(lrs, default=0):.3g}; "
            "optim.lr, optim.warmup_epochs), a distillation weight too large, or broken boxes "
            f"in the data. The last checkpoint written before this step: {last} (resume=true "
            "continues from it once the cause is fixed).")
