"""The LightningModule that trains and evaluates one detector of the model family."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from distill.config import ModelConfig, Recipe, recipe_to_dict
from distill.evaluation import make_map_metric, summarize_map, to_original_pixels
from distill.lightning.ema import WarmupEMA
from distill.lightning.finite import StopOnNonFiniteLoss
from distill.lightning.freeze_bn import FreezeBatchNorm
from distill.lightning.resume import ResumeState
from distill.lightning.schedules import warmup_cosine
from distill.models import build_model


def _setting(model_cfg: ModelConfig | Mapping[str, Any], key: str) -> Any:
    """One key of a ``model`` section, typed (``ModelConfig``) or as saved in a checkpoint."""
    if isinstance(model_cfg, Mapping):
        return model_cfg.get(key)
    return getattr(model_cfg, key)


def model_overrides(model_cfg: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Builder keyword overrides set in a recipe's ``model`` section (unset keys left out)."""
    keys = ("fusion", "backbone_weights", "bn_momentum", "drop_path_rate", "backbone")
    overrides = {key: _setting(model_cfg, key) for key in keys
                 if _setting(model_cfg, key) is not None}
    return {**overrides, **(_setting(model_cfg, "options") or {})}


def build_detector(model_cfg: ModelConfig | Mapping[str, Any], num_classes: int) -> nn.Module:
    """Build the detector a recipe's ``model`` section describes (typed, or a saved mapping)."""
    return build_model(
        _setting(model_cfg, "name"),
        num_classes=num_classes,
        image_size=_setting(model_cfg, "image_size"),
        pretrained=bool(_setting(model_cfg, "pretrained") or False),
        **model_overrides(model_cfg),
    )


def split_weight_decay(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups: no weight decay on biases and normalisation weights (1-d tensors)."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class DetectionModule(pl.LightningModule):
    """Trains one detector: focal + box loss, warm-up/cosine schedule, validation COCO mAP.

    ``recipe`` is the typed ``Recipe`` (or, when Lightning rebuilds the module from a
    checkpoint, the plain containers saved there) and ``class_names`` the dataset's classes in
    label order; both are saved in the checkpoint, the recipe as plain containers.
    ``configure_callbacks`` gives every trainer the callbacks the recipe asks for (EMA, the
    frozen-BN phase, the resume state of the data position and RNGs).
    """

    def __init__(self, recipe: Recipe | dict[str, Any], class_names: list[str]) -> None:
        super().__init__()
        if isinstance(recipe, Recipe):  # the hyper-parameters Lightning saves: plain containers
            recipe = recipe_to_dict(recipe)
        self.save_hyperparameters({"recipe": recipe, "class_names": list(class_names)})
        self.class_names = list(class_names)
        self._own_callbacks: list[pl.Callback] | None = None
        self.optim_cfg = recipe["optim"]
        self.model = build_detector(recipe["model"], num_classes=len(class_names))
        self.model.set_channels_last(recipe["trainer"].get("channels_last", True))
        if recipe["trainer"].get("compile", False):
            self.model.compile()  # in place: checkpoint keys stay those of the plain model
        self.val_map = make_map_metric()
        self.last_metrics: dict[str, Any] = {}

    def forward(self, images: torch.Tensor):
        """Raw detector output for a batch of normalised images."""
        return self.model(images)

    def logs_this_step(self) -> bool:
        """Whether values logged in this training step reach the logger (every
        ``trainer.log_every`` steps, Lightning's rule): on the other steps they would be dropped
        after costing Lightning's bookkeeping, so the training steps skip them."""
        trainer = self._trainer
        if trainer is None:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and ((self.global_step + 1) % every == 0 or trainer.should_stop)

    def log_train(self, values: dict[str, Any], batch_size: int) -> None:
        """``train/loss`` in the progress bar every step; every value on the logging steps."""
        self.log("train/loss", values["loss"], prog_bar=True, batch_size=batch_size)
        if self.logs_this_step():
            others = {f"train/{k}": v for k, v in values.items() if k != "loss"}
            self.log_dict(others, batch_size=batch_size)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model.loss(self.model(images), targets, across_ranks=True)
        self.log_train(losses, batch_size=images.shape[0])
        return losses["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        output = self.model(images)
        losses = self.model.loss(output, targets)
        self.log("val/loss", losses["loss"], batch_size=images.shape[0], sync_dist=True)
        preds, gts = to_original_pixels(self.model.predict(output), targets)
        self.val_map.update(preds, gts)

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.val_map.reset()
        self.last_metrics = summarize_map(result, self.class_names)
        # the metric already gathered every rank's images: the values agree on all ranks, and
        # sync_dist (a mean of equal values) only tells Lightning so
        self.log_dict(
            {f"val/{k}": v for k, v in self.last_metrics.items()
             if k != "map" and isinstance(v, float)},
            sync_dist=True,
        )
        self.log("val/map", self.last_metrics["map"], prog_bar=True, sync_dist=True)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The training callbacks: ``StopOnNonFiniteLoss`` always; ``ResumeState`` of the
        trainer's data module (epoch order, exact resume), ``WarmupEMA`` when
        ``optim.ema_decay > 0``, ``FreezeBatchNorm`` when ``optim.freeze_bn_at`` is set. Made
        once per module, so a ``validate`` after ``fit`` keeps the same EMA (Lightning asks
        again at each run)."""
        if self._own_callbacks is None:
            cfg, data = self.optim_cfg, self.trainer.datamodule
            callbacks: list[pl.Callback] = [StopOnNonFiniteLoss()]
            if data is not None:
                callbacks.append(ResumeState(data))
            if (cfg.get("ema_decay") or 0) > 0:
                callbacks.append(WarmupEMA(cfg["ema_decay"]))
            if cfg.get("freeze_bn_at") is not None:
                callbacks.append(FreezeBatchNorm(cfg["freeze_bn_at"]))
            self._own_callbacks = callbacks
        return self._own_callbacks

    def configure_optimizers(self):
        cfg = self.optim_cfg
        groups = split_weight_decay(self, cfg["weight_decay"])
        # fused kernels (one pass over all parameters) where torch has them, CPU and CUDA; the
        # quick start student's AdamW step went from 7.5 to 2.0 ms on a CPU. Not under mixed
        # precision: Lightning's AMP plugin refuses gradient clipping with fused optimizers
        fused = str(self.trainer.precision) in ("32", "32-true") and all(
            p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]
        )
        if cfg["name"] == "adamw":
            optimizer = torch.optim.AdamW(
                groups, lr=cfg["lr"], betas=(cfg["momentum"], 0.999), fused=fused
            )
        else:
            optimizer = torch.optim.SGD(
                groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=True, fused=fused
            )
        total = int(self.trainer.estimated_stepping_batches)  # loads the train loader
        batches = self.trainer.num_training_batches  # inf when max_steps stops the run first
        per_epoch = max(1, int(batches) if math.isfinite(batches) else total)
        warmup = min(total // 2, int(round(cfg["warmup_epochs"] * per_epoch)))

        def factor(step: int) -> float:
            return warmup_cosine(step, total, warmup, cfg["warmup_factor"], cfg["min_lr_ratio"])

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
