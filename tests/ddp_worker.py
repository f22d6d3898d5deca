"""Run by tests/test_ddp.py: three distillation steps on CPU, alone or as 2 DDP processes (gloo).

``python tests/ddp_worker.py OUT DEVICES BATCH [key=value ...]``: with DEVICES=2 Lightning
starts the second process itself (as for ``distill run RECIPE trainer.devices=2``). Each rank
saves its state after the first step, the teacher before and after, the final state, its
validation image count and the metrics to ``OUT/rank<r>.pt``.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distillation_module import REPO, tiny_overrides  # noqa: E402

from distill.config import load_recipe, recipe_to_dict  # noqa: E402
from distill.distillation.module import DistillationModule  # noqa: E402
from distill.evaluation import make_map_metric  # noqa: E402
from distill.lightning.detection import build_detector  # noqa: E402
from distill.lightning.sync_bn import GlobalBatchNorm2d, GlobalBatchNormAct2d  # noqa: E402
from distill.training import fit, prepare_data  # noqa: E402


class FirstStep(pl.Callback):
    """The module's state after the first optimizer step, its synchronised BNs, and how many
    validation images this process saw."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.synced_bns = 0
        self.val_images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            self.synced_bns = sum(isinstance(m, (GlobalBatchNorm2d, GlobalBatchNormAct2d))
                                  for m in pl_module.modules())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        self.val_images += len(batch[1])


def synced_map(rank: int) -> float:
    """mAP of ``make_map_metric`` when rank 0 holds a hit and rank 1 a miss (one image each)."""
    metric = make_map_metric()
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    pred = box if rank == 0 else box + 60.0
    metric.update([{"boxes": pred, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}],
                  [{"boxes": box, "labels": torch.tensor([0])}])
    return float(metric.compute()["map"])


def main(out: Path, devices: int, batch: int, extra: list[str]) -> None:
    overrides = tiny_overrides(out.parent, **{
        "output_dir": str(out / "runs"),
        "logger": "none",
        "data.batch_size": str(batch),
        "trainer.accelerator": "cpu",
        "trainer.devices": str(devices),
        "trainer.strategy": "ddp" if devices > 1 else "auto",
        "trainer.epochs": "3",  # 16 images: one batch per process and epoch
        "trainer.val_every": "3",
        "trainer.deterministic": "true",
        "optim.name": "sgd",  # Adam's first step is sign-like: it would magnify rounding
        "optim.lr": "0.01",
        "optim.warmup_epochs": "0",
        "optim.ema_decay": "0",
        "optim.freeze_bn_at": "null",
        "model.drop_path_rate": "0",
        # NCHW: oneDNN's NHWC weight gradients round differently at batch 8 and 16 (measured
        # 2.2e-5 on the stem conv after one step), more than the 1e-5 this test holds DDP to
        "trainer.channels_last": "false",
        "teacher.channels_last": "false",
        # the feature term (batch means): 2 x B equals 1 x 2B exactly; prediction-level terms
        # normalise by each process's own count of teacher detections
        "distill.terms": "null",
    })
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", overrides + extra)
    pl.seed_everything(0)
    data = prepare_data(recipe)
    teacher = build_detector(recipe_to_dict(recipe)["teacher"]["model"], data.num_classes)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = DistillationModule(recipe_to_dict(recipe), data.class_names, teacher=teacher)
    first = FirstStep()
    metrics = fit(recipe, module, data, out / "run", extra_callbacks=[first])
    torch.save({
        "world": module.trainer.world_size,
        "synced_bns": first.synced_bns,
        "val_images": first.val_images,
        "synced_map": synced_map(module.global_rank) if devices > 1 else None,
        "step1": first.state,
        "final": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "teacher_before": teacher_before,
        "teacher_after": module.teacher.state_dict(),
        "metrics": metrics,
    }, out / f"rank{module.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
