"""Train and evaluate one detector from a recipe: run folders, loggers, trainer, metrics files."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from distill.checkpoints import (
    check_class_names,
    check_state_fits,
    load_state_strict,
    read_checkpoint,
    saved_class_names,
)
from distill.config import ModelConfig, Recipe, recipe_to_yaml
from distill.data import DetectionDataModule
from distill.errors import RecipeError
from distill.evaluation import run_folder_of
from distill.io import write_json_atomic, write_text_atomic
from distill.lightning import DetectionModule
from distill.lightning.detection import build_detector
from distill.lightning.history import MetricHistory
from distill.lightning.image_logging import ValidationImageLogger
from distill.lightning.progress import EpochSummary
from distill.lightning.resume import AtomicCheckpointIO, LastCheckpoint
from distill.lightning.sync_bn import GlobalSyncBatchNorm
from distill.locks import folder_lock
from distill.models import build_model, list_models


def new_run_dir(recipe: Recipe) -> Path:
    """A fresh run folder ``output_dir/name`` (``name-2``, ... if taken): nothing is overwritten.

    With ``resume: true`` it is ``output_dir/name`` itself, whether it exists or not.
    Under DDP every process must use the same folder: the processes Lightning starts for
    ``trainer.devices=N`` read the one the first chose from ``DISTILL_RUN_DIR`` (inherited);
    processes started together by torchrun or SLURM (``WORLD_SIZE`` / ``SLURM_NTASKS`` > 1)
    cannot agree on a fresh name and use ``output_dir/name`` itself.
    """
    base = Path(recipe.output_dir) / recipe.name
    inherited = os.environ.get(RUN_DIR_ENV, "").split("\t")
    if len(inherited) == 3 and inherited[0] != str(os.getpid()) and inherited[1] == str(base):
        return Path(inherited[2])  # a DDP process started by the one that chose the folder
    if recipe.resume or launched_world_size() > 1:
        candidate = base
    else:
        candidate, n = base, 1
        while candidate.exists() and any(candidate.iterdir()):
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
    check_writable(candidate, "output_dir")
    os.environ[RUN_DIR_ENV] = f"{os.getpid()}\t{base}\t{candidate}"
    return candidate


def check_writable(folder: str | Path, key: str = "output_dir") -> None:
    """Whether run files can be written into ``folder``: a file is written (and removed) in it
    or, when it does not exist yet, in its nearest existing parent, so a check leaves nothing
    behind. A ``RecipeError`` naming ``key`` and the folder when that fails (a file in the
    way, no permission, a read-only disk)."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as err:
        raise RecipeError(
            f"{key}: cannot write run files into {folder} ({err.strerror or err}"
            f"{': ' + str(err.filename) if err.filename else ''}); expected a writable folder "
            "(created if missing)"
        ) from err


# "<pid>\t<output_dir/name>\t<folder chosen>": read by the DDP processes that pid starts
RUN_DIR_ENV = "DISTILL_RUN_DIR"


def launched_world_size() -> int:
    """How many processes a launcher (torchrun, SLURM's srun) started this run with."""
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def is_rank_zero() -> bool:
    """True in the process that writes reports and exports (the only one without DDP)."""
    return rank_zero_only.rank == 0


def check_model(model_cfg: ModelConfig, key: str = "model") -> None:
    """Stop early on an unknown model name or builder setting, naming the valid ones.

    The model is built on the ``meta`` device (no memory, no weights read), so a typo in
    ``model.options`` fails here rather than after the dataset is prepared.
    """
    if model_cfg.name not in list_models():
        raise RecipeError(
            f"{key}.name: unknown model '{model_cfg.name}'; valid: {', '.join(list_models())}"
        )
    settings = dataclasses.replace(model_cfg, pretrained=False, backbone_weights=None)
    try:
        with torch.device("meta"):
            build_detector(settings, num_classes=1)
    except (ValueError, TypeError, RuntimeError) as err:
        raise RecipeError(f"{key} ('{model_cfg.name}'): {err}") from err


def check_model_name(recipe: Recipe) -> None:
    """Stop early when the recipe's model is unknown or mis-configured."""
    check_model(recipe.model)


def resolve_image_size(recipe: Recipe) -> int:
    """The input size: the recipe's ``model.image_size`` or the model's own default."""
    if recipe.model.image_size:
        if recipe.model.image_size % 128:
            raise RecipeError(
                f"model.image_size: {recipe.model.image_size} is not a multiple of 128 "
                "(levels P3..P7 need the input to divide by 2**7)"
            )
        return recipe.model.image_size
    with torch.device("meta"):  # no memory, no init cost: only the default size is wanted
        return build_model(recipe.model.name, num_classes=1).image_size


def prepare_data(recipe: Recipe, train_image_size: int | None = None) -> DetectionDataModule:
    """Build the data module and parse + validate the dataset now, before any training
    (``train_image_size``: training images at that size, validation at the student's)."""
    data = DetectionDataModule(
        recipe.data,
        image_size=resolve_image_size(recipe),
        seed=recipe.seed,
        synthetic=recipe.data.synthetic,
        train_image_size=train_image_size,
    )
    data.setup("fit")
    return data


WANDB_GROUP_ENV = "DISTILL_WANDB_GROUP"  # set by `distill run` for its stages (and DDP workers)


def build_logger(recipe: Recipe, run_dir: Path):
    """The recipe's experiment logger (wandb offline by default), or False for none."""
    if recipe.logger == "none":
        return False
    if recipe.logger == "csv":
        return pl.loggers.CSVLogger(save_dir=run_dir, name="logs", version="")
    if recipe.logger == "tensorboard":
        try:
            return pl.loggers.TensorBoardLogger(save_dir=run_dir, name="logs", version="")
        except ModuleNotFoundError as err:
            raise RecipeError(
                "logger: tensorboard needs the 'tensorboard' package (pip install tensorboard)"
            ) from err
    return pl.loggers.WandbLogger(
        project=recipe.wandb_project,
        name=f"{recipe.name}:{run_dir.name}",
        save_dir=str(run_dir),
        offline=recipe.wandb_mode == "offline",
        mode=recipe.wandb_mode,
        group=os.environ.get(WANDB_GROUP_ENV) or None,  # the stages of one `distill run`
        job_type=run_dir.name,
    )


def device_count(devices: Any, accelerator: str = "auto") -> int:
    """How many devices ``trainer.devices`` asks for (-1 / "auto": the visible GPUs when the
    accelerator may be a GPU, else 1)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if devices in (-1, "auto"):
        gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
        return max(1, gpus)
    return int(devices)


def build_trainer(recipe: Recipe, run_dir: Path, callbacks: list, logger,
                  checkpoint_io: AtomicCheckpointIO | None = None) -> pl.Trainer:
    """A Lightning Trainer configured by the recipe's ``trainer`` section."""
    cfg = recipe.trainer
    precision = "32-true" if cfg.precision == "32" else cfg.precision
    multi = cfg.num_nodes > 1 or device_count(cfg.devices, cfg.accelerator) > 1
    plugins: list = [checkpoint_io or AtomicCheckpointIO()]
    if multi if cfg.sync_batchnorm is None else cfg.sync_batchnorm:
        plugins.append(GlobalSyncBatchNorm())  # keeps timm's norm+act layers, runs on CPU too
    return pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=precision,
        gradient_clip_val=cfg.grad_clip or None,
        check_val_every_n_epoch=cfg.val_every,
        log_every_n_steps=cfg.log_every,
        limit_val_batches=cfg.limit_val_batches,
        deterministic=cfg.deterministic,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        callbacks=callbacks,
        logger=logger,
        plugins=plugins,
        use_distributed_sampler=False,  # the data module shards by rank itself (EpochSampler)
    )


def fit(
    recipe: Recipe, module: DetectionModule, data: DetectionDataModule, run_dir: Path,
    extra_callbacks: list | None = None,
) -> dict[str, Any]:
    """Fit ``module`` as the recipe's trainer section says; write checkpoints and metrics.json.

    Checkpoints: ``best.ckpt`` (best validation mAP) and ``last.ckpt`` (each epoch end, every
    ``trainer.checkpoint_every_steps`` steps, the end of training: the final weights). With
    ``resume: true`` and a ``run_dir/checkpoints/last.ckpt``, training continues from it
    (weights, optimizer, scheduler, EMA, step, data position, RNG states); the file is read
    weights-only and checked against ``module`` first.

    Returns the final validation metrics (EMA weights when EMA is on) plus the run folder;
    ``last_checkpoint`` holds those final weights, ``best_checkpoint`` the best validated ones
    (None when no validation ran), ``checkpoint`` is ``last_checkpoint``.
    """
    with folder_lock(run_dir):
        return _fit(recipe, module, data, run_dir, extra_callbacks)


def _fit(recipe: Recipe, module: DetectionModule, data: DetectionDataModule, run_dir: Path,
         extra_callbacks: list | None) -> dict[str, Any]:
    folder = run_dir / "checkpoints"
    checkpoint_io = AtomicCheckpointIO()
    last = folder / "last.ckpt"
    resume_from = str(last) if recipe.resume and last.is_file() else None
    if resume_from:
        state = checkpoint_io.preload(last)["state_dict"]
        check_state_fits(module, state, f"resume: {last}", f"model '{recipe.model.name}' with "
                         f"{len(module.class_names)} classes (another recipe's run folder?)")
        print(f"resuming from {resume_from}")
    checkpoint = ModelCheckpoint(
        dirpath=folder, filename="best", monitor="val/map", mode="max",
        enable_version_counter=False,  # overwrite best.ckpt, never add best-v1.ckpt
    )
    # EMA, the frozen-BN phase and the resume state come from the module (configure_callbacks)
    callbacks: list = [checkpoint, LastCheckpoint(folder, recipe.trainer.checkpoint_every_steps),
                       MetricHistory(run_dir / "history.json"), *(extra_callbacks or [])]
    if not recipe.trainer.progress_bar:
        callbacks.append(EpochSummary())
    logger = build_logger(recipe, run_dir)
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if recipe.logger == "wandb":
        callbacks.append(ValidationImageLogger())
    trainer = build_trainer(recipe, run_dir, callbacks, logger, checkpoint_io)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    train_seconds = time.perf_counter() - start
    trainer.validate(module, datamodule=data, verbose=False)
    metrics = {
        **module.last_metrics,
        "best_map": float(checkpoint.best_model_score or 0.0),
        "train_seconds": round(train_seconds, 1),
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "model": recipe.model.name,
        "image_size": data.image_size,
        "checkpoint": str(last),
        "last_checkpoint": str(last),
        "best_checkpoint": checkpoint.best_model_path or None,
        "run_dir": str(run_dir),
    }
    if trainer.is_global_zero:  # one writer under DDP
        write_json_atomic(run_dir / "metrics.json", metrics)
    if logger and recipe.logger == "wandb":
        logger.experiment.finish()
    return metrics


def trained_checkpoint(metrics: dict[str, Any], use: str = "last") -> Path:
    """The checkpoint of a finished training (its ``metrics``) that ``use`` names: ``last`` (the
    final weights, the ones ``metrics`` describe) or ``best`` (the best validation mAP).

    Metrics written before both were recorded have ``checkpoint`` (``last.ckpt``) only.
    """
    if use not in ("last", "best"):
        raise RecipeError(f"teacher.use: {use!r}; expected last or best")
    path = metrics.get(f"{use}_checkpoint")
    if path is None and use == "last":
        path = metrics.get("checkpoint")
    if path is None and use == "best":
        folder = Path(metrics.get("checkpoint", "")).parent
        path = str(folder / "best.ckpt") if (folder / "best.ckpt").is_file() else None
    if path is None:
        raise RecipeError(f"teacher.use: {use}: the training in {metrics.get('run_dir')} has no "
                          f"{use} checkpoint (no validation ran?); use last")
    return Path(path)


def finished_metrics(recipe: Recipe, run_dir: Path) -> dict[str, Any] | None:
    """With ``resume: true``, the metrics of a run folder that finished training, else None."""
    path = run_dir / "metrics.json"
    if not (recipe.resume and path.is_file()):
        return None
    print(f"resume: {run_dir} is finished ({path}), not training it again")
    return json.loads(path.read_text())


def train(recipe: Recipe, run_dir: Path | None = None) -> dict[str, Any]:
    """Train the recipe's detector; write checkpoints, ``recipe.yaml`` and ``metrics.json``.

    ``run_dir`` defaults to a fresh folder under ``output_dir``. Returns the final metrics.
    With ``resume: true`` a finished run folder is not trained again and an unfinished one
    continues from its ``last.ckpt``.
    """
    check_model_name(recipe)
    check_writable(run_dir if run_dir is not None else recipe.output_dir)
    pl.seed_everything(recipe.seed, workers=True)
    data = prepare_data(recipe)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(recipe)
    done = finished_metrics(recipe, run_dir)
    if done is not None:
        return done
    write_text_atomic(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    print(f"run folder: {run_dir}")
    module = DetectionModule(recipe, data.class_names)
    return fit(recipe, module, data, run_dir)


def check_saved_model(checkpoint: dict, recipe: Recipe, path: Path) -> None:
    """Refuse a checkpoint of another model than the recipe builds, naming both (rather than
    the hundreds of keys that would not fit)."""
    hparams = checkpoint.get("hyper_parameters")
    saved = hparams.get("recipe", {}).get("model") if isinstance(hparams, dict) else None
    if not isinstance(saved, dict) or saved.get("name") in (None, recipe.model.name):
        return
    size = f" at {saved['image_size']} px" if saved.get("image_size") else ""
    raise RecipeError(
        f"{path} holds the model {saved['name']}{size}, but the recipe builds "
        f"{recipe.model.name}; evaluate it with the recipe it was trained with, or "
        f"model.name={saved['name']}")


def evaluate(recipe: Recipe, checkpoint_path: str | Path, output: str | Path | None = None) -> dict:
    """Evaluate a checkpoint on the recipe's validation split and write a metrics JSON.

    The JSON goes to ``output`` or, by default, ``eval-<checkpoint name>.json`` in the run folder
    that holds the checkpoint.
    """
    check_model_name(recipe)
    path = Path(checkpoint_path)
    checkpoint = read_checkpoint(path)
    data = prepare_data(recipe)
    check_class_names(saved_class_names(checkpoint), data.class_names, path,
                      f"the recipe's data ({recipe.data.format} {recipe.data.root})")
    check_saved_model(checkpoint, recipe, path)
    module = DetectionModule(recipe, data.class_names)
    what = f"model '{recipe.model.name}' with {data.num_classes} classes"
    state = checkpoint["state_dict"]
    if any(key.startswith("distiller.") for key in state):  # a `distill run` stage checkpoint
        state = {k: v for k, v in state.items() if not k.startswith("distiller.")}
        print(f"{path}: evaluating the student (the align modules in the file are not used)")
    load_state_strict(module, state, str(path), what)
    trainer = build_trainer(recipe, path.parent, callbacks=[], logger=False)
    trainer.validate(module, datamodule=data, verbose=False)
    metrics = {**module.last_metrics, "checkpoint": str(path), "model": recipe.model.name}
    target = Path(output) if output else run_folder_of(path) / f"eval-{path.stem}.json"
    write_json_atomic(target, metrics)
    metrics["metrics_file"] = str(target)
    return metrics
