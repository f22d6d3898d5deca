"""The parts of an exact resume, each checked alone (the killed-run test in test_resume.py is
slow): last.ckpt at every epoch end, the frozen-BN phase and the data position after a restart
mid-epoch, best and last checkpoints in metrics.json."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytorch_lightning as pl
from test_distillation_module import tiny_recipe
from torch import nn

from distill.checkpoints import read_checkpoint
from distill.lightning.freeze_bn import FreezeBatchNorm
from distill.lightning.resume import ResumeState, rng_states
from distill.training import trained_checkpoint


def test_last_ckpt_is_written_at_each_epoch_end_and_metrics_name_best_and_last(tmp_path):
    """Epoch 0 does not validate (val_every 2): its last.ckpt must exist when epoch 1 starts."""
    from distill import training

    seen: dict[int, int | None] = {}

    class Probe(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            seen[trainer.current_epoch] = (read_checkpoint(last)["global_step"]
                                           if last.is_file() else None)

    recipe = tiny_recipe(tmp_path, **{"logger": "none", "trainer.epochs": "2",
                                      "trainer.val_every": "2"})
    data = training.prepare_data(recipe)
    module = training.DetectionModule(recipe, data.class_names)
    run_dir = tmp_path / "run"
    metrics = training.fit(recipe, module, data, run_dir, [Probe()])
    assert seen == {0: None, 1: 2}  # 16 images, batch 8: 2 steps an epoch
    folder = run_dir / "checkpoints"
    assert metrics["last_checkpoint"] == metrics["checkpoint"] == str(folder / "last.ckpt")
    assert metrics["best_checkpoint"] == str(folder / "best.ckpt")
    assert read_checkpoint(folder / "last.ckpt")["global_step"] == 4
    assert trained_checkpoint(metrics, "best") == folder / "best.ckpt"
    assert trained_checkpoint({"checkpoint": "x/last.ckpt"}) == Path("x/last.ckpt")  # old files


class Data:
    """The part of DetectionDataModule that ResumeState uses."""

    train_sampler = None
    resume_position = None

    def batches_per_epoch(self) -> int:
        return 4


def test_resume_state_counts_on_from_the_restored_position():
    """Lightning restarting mid-epoch calls no on_train_epoch_start: without restoring the
    counters, the next checkpoint said epoch 0, batch 1 and a second resume read the wrong data."""
    state = ResumeState(Data())
    state.load_state_dict({"epoch": 1, "batches": 2, "rng": rng_states()})
    assert state.data.resume_position == (1, 2)
    state.on_train_batch_end(None, None, None, None, 2)
    saved = state.state_dict()
    assert (saved["epoch"], saved["batches"]) == (1, 3)
    state.load_state_dict({"epoch": 1, "batches": 4, "rng": rng_states()})  # an epoch's end
    assert (state.state_dict()["epoch"], state.state_dict()["batches"]) == (2, 0)


def test_frozen_batch_norm_is_applied_when_training_restarts_mid_epoch():
    module = SimpleNamespace(model=nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    module.model.train()
    callback = FreezeBatchNorm(0.5)
    callback.on_train_start(SimpleNamespace(current_epoch=0, max_epochs=4), module)
    assert module.model[1].training  # before the frozen phase
    callback.on_train_start(SimpleNamespace(current_epoch=2, max_epochs=4), module)
    assert not module.model[1].training and module.model[0].training
