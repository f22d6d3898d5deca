"""Exact resume: atomic checkpoint files, RNG states and the data-loader position.

A checkpoint written by ``fit`` holds, besides Lightning's own state (model incl. the align
modules, optimizer, LR scheduler, loop counters and so ``global_step``, which the distillation
weight is a function of, callback states incl. the EMA model): the RNG states of python, numpy
and torch (CPU and CUDA) and the position in the training data (epoch, batches trained in it).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target folder, then ``os.replace``: a kill
    leaves either the previous checkpoint or the new one, never a truncated file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def rng_states() -> dict[str, Any]:
    """The current RNG states of python, numpy, torch CPU and (when present) CUDA."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {  # tensors and plain types only: loadable with weights_only=True
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned."""
    random.setstate(states["python"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(pl.Callback):
    """Saves and restores RNG states and the data position of ``data`` (a
    ``DetectionDataModule`` with an ``EpochSampler``).

    The position is counted here (batches finished in the current epoch), so it is exact however
    far Lightning's fetcher has read ahead. On restore it goes to ``data.resume_position``, which
    the next ``train_dataloader()`` starts from; the RNG states are set back at
    ``on_train_start``, after the sanity check, right before the first resumed step. Data
    augmentation draws from per-sample seeds (``EpochSampler``), so the global streams only serve
    the training step itself (e.g. drop path).
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.epoch = 0
        self.batches = 0
        self._resumed: tuple[int, int] | None = None
        self._rng: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "rng": rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        loader_batches = self.data.batches_per_epoch()
        if loader_batches and batches >= loader_batches:  # saved at the end of an epoch
            epoch, batches = epoch + 1, 0
        self._resumed = (epoch, batches)
        self.data.resume_position = (epoch, batches)
        self._rng = state["rng"]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._rng is not None:
            set_rng_states(self._rng)
            self._rng = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = trainer.current_epoch
        resumed, self._resumed = self._resumed, None
        self.batches = resumed[1] if resumed is not None and resumed[0] == self.epoch else 0
        sampler = self.data.train_sampler
        if sampler is not None:  # the next pass over the data (epoch > 0) reads it
            sampler.epoch = self.epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1
