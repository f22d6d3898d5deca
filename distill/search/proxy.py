"""What a trained search measures of a candidate: size, latency on this device, and accuracy
after a short training on the recipe's own data.

The accuracy estimate is the framework's training, cut short: ``DetectionModule`` (its loss,
optimizer, warm-up + cosine schedule over the step budget) under a Lightning ``Trainer`` with the
recipe's precision, gradient clipping, EMA and frozen-BN phase, the same seed for every
candidate (same data order and augmentation), then validation mAP (EMA weights) on the recipe's
validation split. No checkpoints, no logger. The latency is ``distill.latency.measure_latency``:
batch 1, warm, median, in the memory format training uses.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import OmegaConf

from distill.config import Recipe
from distill.data import DetectionDataModule
from distill.errors import RecipeError
from distill.info import count_macs
from distill.latency import measure_latency
from distill.lightning.detection import build_detector

KEPT_MODEL_KEYS = ("bn_momentum", "drop_path_rate", "fusion")  # the recipe's, for every candidate
LATENCY_WARMUP = 3


def candidate_recipe(recipe: Recipe, spec: dict[str, Any], steps: int | None = None) -> Recipe:
    """``recipe`` with ``spec`` as its whole ``model`` section (the recipe's ``bn_momentum``,
    ``drop_path_rate`` and ``fusion`` kept); with ``steps``, set up for a proxy training of that
    many optimizer steps (no validation until the end, no logger, no progress bar)."""
    values = OmegaConf.to_container(OmegaConf.structured(recipe))
    kept = {key: values["model"][key] for key in KEPT_MODEL_KEYS}
    values["model"] = {**kept, **spec}
    if steps is not None:
        values["logger"] = "none"
        values["trainer"].update(max_steps=steps, val_every=10**9, progress_bar=False,
                                 checkpoint_every_steps=0)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Recipe), values))


def build_spec(spec: dict[str, Any], num_classes: int, device: str = "cpu") -> torch.nn.Module:
    """The detector of a ``model`` section, never with pretrained weights."""
    settings = {**spec, "pretrained": False, "backbone_weights": None}
    with torch.device(device):
        return build_detector(settings, num_classes)


def size_measures(spec: dict[str, Any], num_classes: int) -> dict[str, int]:
    """``params``, ``macs`` and ``flops`` (``torch.utils.flop_counter``, one image) of a model
    section, counted on the meta device (no memory, no time)."""
    model = build_spec(spec, num_classes, device="meta")
    size = int(spec["image_size"])
    macs = count_macs(model, (size, size))
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs,
            "flops": 2 * macs}


def latency_ms(spec: dict[str, Any], num_classes: int, runs: int,
               channels_last: bool = True) -> float:
    """Median ms of the detector's forward on this machine's CPU (batch 1, after
    ``LATENCY_WARMUP`` warm-up passes); the caller's RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        model = build_spec(spec, num_classes)
    model.set_channels_last(channels_last)
    result = measure_latency(model, int(spec["image_size"]), warmup=LATENCY_WARMUP, runs=runs)
    return float(result["median_ms"])


@dataclass
class ProxyTrainer:
    """Short trainings of candidates on ``recipe``'s data: ``steps`` optimizer steps each, then
    validation (``val_batches`` batches, None: all). Data modules are kept per input size."""

    recipe: Recipe
    steps: int
    val_batches: int | None = None
    _data: dict[int, DetectionDataModule] = field(default_factory=dict)

    def data(self, image_size: int) -> DetectionDataModule:
        """The recipe's data at ``image_size`` (parsed and validated once)."""
        if image_size not in self._data:
            data = DetectionDataModule(self.recipe.data, image_size=image_size,
                                       seed=self.recipe.seed, synthetic=self.recipe.data.synthetic)
            data.setup("fit")
            self._data[image_size] = data
        return self._data[image_size]

    @property
    def num_classes(self) -> int:
        """Classes of the recipe's dataset."""
        return self.data(self._any_size()).num_classes

    def _any_size(self) -> int:
        return next(iter(self._data), 128)

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Train the model of ``spec`` and return ``map``, ``map_50``, ``val_loss``,
        ``train_seconds`` and ``train_cpu_seconds`` (this process's threads, not data workers:
        a measure of the work that a busy machine does not inflate as much as the wall time)."""
        import pytorch_lightning as pl

        from distill.lightning import DetectionModule

        recipe = candidate_recipe(self.recipe, spec, self.steps)
        data = self.data(int(spec["image_size"]))
        cfg = recipe.trainer
        pl.seed_everything(recipe.seed, workers=True, verbose=False)
        module = DetectionModule(recipe, data.class_names)  # EMA, frozen BN, ResumeState
        epochs = math.ceil(self.steps / data.batches_per_epoch())
        with tempfile.TemporaryDirectory(prefix="distill-proxy-") as scratch:
            trainer = pl.Trainer(
                default_root_dir=scratch, max_epochs=epochs, max_steps=self.steps,
                accelerator=cfg.accelerator, devices=1,
                precision="32-true" if cfg.precision == "32" else cfg.precision,
                gradient_clip_val=cfg.grad_clip or None, check_val_every_n_epoch=cfg.val_every,
                num_sanity_val_steps=0,
                # a count of batches (an int: Lightning reads 1.0 as all of them)
                limit_val_batches=self.val_batches or cfg.limit_val_batches,
                deterministic=cfg.deterministic, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, logger=False,
                use_distributed_sampler=False,
            )
            start, cpu = time.perf_counter(), time.process_time()
            trainer.fit(module, datamodule=data)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            trainer.validate(module, datamodule=data, verbose=False)
        metrics = module.last_metrics
        if not metrics:
            raise RecipeError("search: the proxy validation saw no batch; check "
                              "search.val_batches and the validation split")
        val_loss = trainer.callback_metrics.get("val/loss")
        return {"map": round(float(metrics["map"]), 6),
                "map_50": round(float(metrics["map_50"]), 6),
                "val_loss": None if val_loss is None else round(float(val_loss), 6),
                "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu, 2),
                "steps": int(trainer.global_step)}
