"""A one-line-per-epoch summary, for logs where a progress bar is off (CI, batch jobs)."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info


class EpochSummary(pl.Callback):
    """Prints epoch, training loss, validation mAP and elapsed time after each validation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for key in ("train/loss", "val/loss", "val/map", "val/map_50"):
            if key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4f}")
        parts.append(f"{time.perf_counter() - self.start:.0f} s")
        rank_zero_info("  ".join(parts))
