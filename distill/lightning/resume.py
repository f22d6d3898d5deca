"""Exact resume: atomic checkpoint files, RNG states and the data-loader position.

A checkpoint written by ``fit`` holds, besides Lightning's own state (model incl. the align
modules, optimizer, LR scheduler, loop counters and so ``global_step``, which the distillation
weight is a function of, callback states incl. the EMA model): the RNG states of python, numpy
and torch (CPU and CUDA) and the position in the training data (epoch, batches trained in it).

Checkpoints are read with ``weights_only=True`` (``AtomicCheckpointIO.load_checkpoint``), also
the one Lightning resumes from, so a file with pickled code in it is refused, never run.
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
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.exceptions import SIGTERMException

from distill.checkpoints import read_checkpoint
from distill.io import save_torch_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target folder, then ``os.replace``: a kill
    leaves either the previous checkpoint or the new one, never a truncated file. Reads are
    ``weights_only`` (``read_checkpoint``); ``preload`` hands Lightning a file read (and checked)
    before ``trainer.fit``, so it is not read twice."""

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: dict[str, dict[str, Any]] = {}

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        save_torch_atomic(checkpoint, path)

    def preload(self, path: str | os.PathLike) -> dict[str, Any]:
        """Read ``path`` now (weights only, clear error); the next ``load_checkpoint`` of it
        returns this dict."""
        checkpoint = read_checkpoint(path)
        self._preloaded[str(Path(path).resolve())] = checkpoint
        return checkpoint

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """The preloaded dict of ``path``, else ``read_checkpoint(path)``: ``weights_only=True``
        whatever Lightning asks (tensors land on the CPU; Lightning moves them)."""
        checkpoint = self._preloaded.pop(str(Path(path).resolve()), None)
        return checkpoint if checkpoint is not None else read_checkpoint(path)


class LastCheckpoint(Checkpoint):
    """The one writer of ``dirpath/last.ckpt``: at every training epoch end (after that epoch's
    validation), every ``every_n_steps`` optimizer steps when set, and when training ends.

    Lightning 2.6's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes no ``last.ckpt`` at
    epoch ends (only with a top-k save), so a resume went back to the last validated epoch. As a
    ``Checkpoint`` this callback runs after the others' hooks, so ``ResumeState`` has counted the
    batch when the state is saved.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int = 0) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = int(every_n_steps)
        self._saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state
            self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.every_n_steps
        if every and trainer.global_step % every == 0 and trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)  # also at a step just saved: now with the validation's results

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        """On SIGTERM (Lightning stops between training steps): save the state after the last
        finished step, so ``resume: true`` continues exactly there. Not on other exceptions (a
        diverged loss must not overwrite the last good state), nor during validation."""
        if (isinstance(exception, SIGTERMException)
                and trainer.state.stage == RunningStage.TRAINING
                and trainer.global_step != self._saved_step):
            self._save(trainer)
            print(f"SIGTERM: the state after step {trainer.global_step} is saved in "
                  f"{self.path}", flush=True)


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
        # a restart mid-epoch calls no on_train_epoch_start: the counters go on from here
        self.epoch, self.batches = epoch, batches
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
