"""SIGTERM (timeout, SLURM, Docker, Kubernetes) ends a run non-zero with a resumable state."""

from __future__ import annotations

import json
import os
import signal

import pytorch_lightning as pl
import torch

from distill.cli import main
from distill.lightning.detection import DetectionModule


class TermAtStep(pl.Callback):
    """Sends this process SIGTERM once, after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_exits_143_saves_the_step_and_resume_finishes(tmp_path, capsys, monkeypatch):
    args = ["train", "recipes/quickstart.yaml", f"data.root={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'runs'}", "name=term", "logger=csv",
            "trainer.progress_bar=false", "data.synthetic.num_train=16",
            "data.synthetic.num_val=4", "data.batch_size=8", "data.num_workers=0",
            "trainer.epochs=3", "trainer.val_every=3"]
    own = DetectionModule.configure_callbacks
    monkeypatch.setattr(DetectionModule, "configure_callbacks",
                        lambda self: [*own(self), TermAtStep(3)])
    assert main(args) == 128 + signal.SIGTERM
    captured = capsys.readouterr()
    run = tmp_path / "runs" / "term"
    assert "stopped by SIGTERM" in captured.err and "resume=true" in captured.err
    assert "the state after step 3 is saved" in captured.out
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3 and not (run / "metrics.json").exists()

    monkeypatch.setattr(DetectionModule, "configure_callbacks", own)
    assert main([*args, "resume=true"]) == 0
    assert json.loads((run / "metrics.json").read_text())["map"] >= 0
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 6  # 3 epochs of 2 steps: resumed, not restarted
