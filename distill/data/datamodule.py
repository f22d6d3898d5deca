"""``DetectionDataModule``: parse + validate a dataset once, then serve letterboxed batches."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from distill.data.dataset import DetectionDataset, collate
from distill.data.formats import data_format, format_settings
from distill.data.mixing import MixedDataset
from distill.data.records import DatasetError, DatasetIndex, check_policy
from distill.data.sampling import EpochSampler
from distill.data.settings import DataConfig
from distill.data.transforms import build_transforms


def own_process_group(worker_id: int) -> None:
    """A DataLoader worker's init: leave the main process's process group. ``timeout`` (and a
    shell's ``kill -TERM -PGID``) signal the whole group; a worker killed by it would raise in
    the main process mid-step, before Lightning's own SIGTERM handling saves the state and
    stops between steps. The main process still ends its workers by pid at shutdown, and a
    worker whose parent is gone exits by itself."""
    os.setpgid(0, 0)


log = logging.getLogger(__name__)


class DetectionDataModule(pl.LightningDataModule):
    """Train / val loaders of one dataset (``cfg.format``), both splits in the same format.

    The format (a registered ``DataFormat``, ``distill.data.formats``) prepares and reads the
    splits; ``setup()`` parses and validates both (idempotent) and stops with a ``DatasetError``
    before any training when the data is bad (``bad_samples: error``) or the val split's classes
    differ from train's. ``class_names`` / ``num_classes`` run ``setup()`` when needed.
    ``synthetic`` is the generator's settings (``SyntheticConfig`` or a mapping) for
    ``format: synthetic`` (default: the config's ``synthetic`` section, else ``SyntheticConfig()``).
    """

    def __init__(self, cfg: DataConfig, image_size: int, seed: int = 0, synthetic: Any = None,
                 train_image_size: int | None = None):
        super().__init__()
        self.format = data_format(cfg.format)
        check_policy(cfg.bad_samples)
        values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
        if synthetic is not None:
            values["synthetic"] = synthetic
        self.settings = format_settings(self.format, values)  # the format's own settings
        self.cfg = cfg
        self.image_size = int(image_size)
        # training images at another size (a teacher's native input, ``teacher.input``)
        self.train_image_size = int(train_image_size or image_size)
        self.seed = int(seed)
        self.train_index: DatasetIndex | None = None
        self.val_index: DatasetIndex | None = None
        self.train_dataset: DetectionDataset | MixedDataset | None = None
        self.val_dataset: DetectionDataset | None = None
        self.train_sampler: EpochSampler | None = None
        # (epoch, batches already trained in it): set when resuming, used by the next loader
        self.resume_position: tuple[int, int] | None = None

    # ------------------------------------------------------------------ parsing

    def _split_name(self, which: str) -> str:
        return self.format.split_name(which, getattr(self.cfg, which))

    def prepare_data(self) -> None:
        self.format.prepare(Path(self.cfg.root), self.settings)

    def _parse(self, which: str, class_names: list[str] | None) -> DatasetIndex:
        cfg = self.cfg
        limit = cfg.max_train_images if which == "train" else cfg.max_val_images
        index = self.format.parse(Path(cfg.root), self._split_name(which), self.settings,
                                  class_names, bad_samples=cfg.bad_samples, max_images=limit,
                                  verify_images=cfg.verify_images)
        if index.samples and not any(len(s.labels) for s in index.samples):
            raise DatasetError(
                f"{cfg.format} {cfg.root}: {which} split {self._split_name(which)!r} has "
                f"{len(index.samples)} images and not one object: nothing to train or measure "
                f"on. Check that its annotations are where the {cfg.format} format looks for "
                "them (`distill data RECIPE` shows what was read)")
        return index

    def _check_val_classes(self, train: DatasetIndex) -> None:
        """Classes found in val that train lacks (formats whose classes come from the objects)."""
        cfg, split = self.cfg, self._split_name("val")
        val_names = self.format.split_classes(Path(cfg.root), split, self.settings)
        extra = sorted(set(val_names or ()) - set(train.class_names))
        if extra:
            raise DatasetError(
                f"{cfg.format} {cfg.root}: val split {split!r} has classes {extra} that the "
                f"train split does not have (train classes: {train.class_names}); set "
                "data.classes to the full class list"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.train_index is not None:
            return
        cfg = self.cfg
        self.format.prepare(Path(cfg.root), self.settings)
        train = self._parse("train", cfg.classes)
        if cfg.classes is None:
            self._check_val_classes(train)
        if cfg.classes is not None and list(cfg.classes) != train.class_names:
            raise DatasetError(
                f"{cfg.format} {cfg.root}: data.classes {list(cfg.classes)} differ from the "
                f"dataset's classes {train.class_names} (label order); remove data.classes or "
                "make it match"
            )
        val = self._parse("val", train.class_names)
        if val.class_names != train.class_names:
            raise DatasetError(
                f"{cfg.format} {cfg.root}: val classes {val.class_names} differ from train "
                f"classes {train.class_names}; both splits must use the same class list in the "
                "same order"
            )
        train_tf, val_tf = build_transforms(self.image_size, cfg.augment)
        if self.train_image_size != self.image_size:
            train_tf = build_transforms(self.train_image_size, cfg.augment)[0]
        self.train_dataset = DetectionDataset(train, train_tf)
        augment = cfg.augment
        if augment.enabled and (augment.mosaic or augment.mixup):
            self.train_dataset = MixedDataset(self.train_dataset, augment.mosaic, augment.mixup)
        self.val_dataset = DetectionDataset(val, val_tf)
        self.train_index, self.val_index = train, val
        log.info("data: %s", self.summary())

    # ------------------------------------------------------------------ info

    @property
    def class_names(self) -> list[str]:
        if self.train_index is None:
            self.setup()
        return list(self.train_index.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, Any]:
        """Image / object counts per split and per class, and what ``drop`` removed."""
        if self.train_index is None:
            self.setup()
        return {
            "format": self.cfg.format,
            "root": str(self.cfg.root),
            "class_names": self.class_names,
            "train": self.train_index.summary(),
            "val": self.val_index.summary(),
        }

    # ------------------------------------------------------------------ loaders

    def _loader_kwargs(self) -> dict[str, Any]:
        workers = int(self.cfg.num_workers)
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "collate_fn": collate,
            "pin_memory": torch.cuda.is_available(),
            "worker_init_fn": own_process_group if workers > 0 else None,
        }

    def _world(self) -> tuple[int, int]:
        """``(number of processes, this process's rank)`` of the attached trainer (1, 0 without)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def batches_per_epoch(self) -> int:
        """Training batches per epoch in this process (``len(train_dataloader())``)."""
        if self.train_dataset is None:
            self.setup("fit")
        world, _ = self._world()
        per_rank, batch = math.ceil(len(self.train_dataset) / world), int(self.cfg.batch_size)
        return per_rank // batch if per_rank > batch else 1

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch) through ``EpochSampler``, this process's share under DDP.

        A pending ``resume_position`` (set by ``ResumeState`` from a checkpoint) starts the
        sampler at that epoch, past the batches already trained on.
        """
        if self.train_dataset is None:
            self.setup("fit")
        batch = int(self.cfg.batch_size)
        world, rank = self._world()
        self.train_sampler = EpochSampler(len(self.train_dataset), self.seed, world, rank)
        if self.resume_position is not None:
            epoch, batches = self.resume_position
            self.resume_position = None
            self.train_sampler.epoch = epoch
            self.train_sampler.skip = batches * batch
        return DataLoader(
            self.train_dataset,
            batch_size=batch,
            sampler=self.train_sampler,
            drop_last=len(self.train_sampler) > batch,
            generator=torch.Generator().manual_seed(self.seed),  # not the global RNG stream
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        """In order; under DDP each process takes every world-th image (none twice)."""
        if self.val_dataset is None:
            self.setup("validate")
        world, rank = self._world()
        sampler = None
        if world > 1:
            from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(
                self.val_dataset, num_replicas=world, rank=rank, shuffle=False
            )
        return DataLoader(
            self.val_dataset,
            batch_size=int(self.cfg.val_batch_size or self.cfg.batch_size),
            shuffle=False,
            sampler=sampler,
            drop_last=False,
            generator=torch.Generator().manual_seed(self.seed),
            **self._loader_kwargs(),
        )
