"""Per-epoch training history (``history.json``): the numbers the report's curves are drawn from.

Whatever the logger (W&B offline, CSV or none), each run folder gets the same small file: per
epoch the mean training loss, the mean of every other ``train/...`` value over the steps that
logged it (detection loss, each distillation term and its weight), and the validation figures
of the epochs that validated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from distill.io import write_json_atomic
from distill.lightning.freeze_bn import FreezeBatchNorm

VAL_KEYS = ("val/map", "val/map_50", "val/loss")


class MetricHistory(pl.Callback):
    """Averages the logged training values per epoch and writes ``path`` after each epoch.

    The records travel in checkpoints (``state_dict``), so a resumed run keeps its history.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self._sums: dict[str, torch.Tensor | float] = {}
        self._counts: dict[str, int] = {}

    def _add(self, key: str, value: torch.Tensor | float) -> None:
        """Summed where the value lives (no host-device sync per step); read at epoch end."""
        if isinstance(value, torch.Tensor):
            value = value.detach().float()
        self._sums[key] = self._sums.get(key, 0.0) + value
        self._counts[key] = self._counts.get(key, 0) + 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums, self._counts = {}, {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._add("train/loss", loss)
        every = trainer.log_every_n_steps
        # the other train/ values are logged on Lightning's logging steps only (the step counter
        # has already moved on here): read them on those steps, not their stale copies after
        if every > 0 and trainer.global_step % every == 0:
            for key, value in trainer.callback_metrics.items():
                if key.startswith("train/") and key != "train/loss" and value.numel() == 1:
                    self._add(key, value)

    def _record(self, epoch: int) -> dict[str, Any]:
        """The record of ``epoch`` (1-based), made if missing; later epochs are dropped (a
        resumed run trains them again)."""
        self.records = [r for r in self.records if r["epoch"] <= epoch]
        if not self.records or self.records[-1]["epoch"] != epoch:
            self.records.append({"epoch": epoch})
        return self.records[-1]

    def _write(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            write_json_atomic(self.path, {"epochs": self.records})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = self._record(trainer.current_epoch + 1)
        record["step"] = int(trainer.global_step)
        freeze = next((cb for cb in trainer.callbacks if isinstance(cb, FreezeBatchNorm)), None)
        if freeze is not None and trainer.current_epoch >= freeze.start_epoch(trainer):
            record["bn_frozen"] = True  # the plots mark where the statistics stopped moving
        record.update({k: round(float(self._sums[k]) / self._counts[k], 6)
                       for k in sorted(self._sums)})
        self._write(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validation runs after the epoch's end hooks: its figures join the epoch's record."""
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        record = self._record(trainer.current_epoch + 1)
        record.update({k: round(float(metrics[k]), 6) for k in VAL_KEYS if k in metrics})
        self._write(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The checkpoint's records, with the validation figures the file gained after the
        checkpoint was written (epoch-end checkpoints come before that epoch's validation)."""
        self.records = [dict(r) for r in state_dict.get("records", [])]
        try:
            written = {r["epoch"]: r for r in json.loads(self.path.read_text())["epochs"]}
        except (OSError, ValueError, KeyError, TypeError):
            return
        for record in self.records:
            later = written.get(record["epoch"], {})
            record.update({k: later[k] for k in VAL_KEYS if k in later and k not in record})
