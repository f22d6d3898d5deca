"""``format: synthetic``: the embedded generator's dataset (``distill.data.synthetic``), written
under ``data.root`` when missing or stale, then read as COCO JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.data.formats import DATA_FORMATS
from distill.data.formats.coco import CocoFormat, CocoSettings
from distill.data.records import DatasetIndex


@dataclass
class SyntheticSettings:
    """``format: synthetic`` settings: the generator's (``data.synthetic``, a
    ``SyntheticConfig`` or a mapping of its keys; None: its defaults)."""

    synthetic: Any = None


@DATA_FORMATS.register("synthetic")
class SyntheticFormat(CocoFormat):
    """Generated shapes on textured backgrounds, in COCO JSON (the quick start's data)."""

    settings = SyntheticSettings

    def prepare(self, root: Path, settings: SyntheticSettings) -> None:
        """Generate the dataset under ``root`` unless it is there with the same settings."""
        from distill.data import synthetic

        cfg = settings.synthetic if settings.synthetic is not None else synthetic.SyntheticConfig()
        synthetic.ensure_synthetic_dataset(root, cfg)

    def parse(self, root: Path, split: str, settings: SyntheticSettings,
              class_names: list[str] | None, **read: Any) -> DatasetIndex:
        """Read the generated COCO JSON ``root / split`` (images relative to ``root``)."""
        return super().parse(root, split, CocoSettings(), class_names, **read)
