"""Pascal VOC XML -> ``DatasetIndex``.

Layout: ``root/ImageSets/Main/<split>.txt`` (one image id per line, extra columns ignored),
``root/Annotations/<id>.xml``, ``root/JPEGImages/<filename>``. The image is the XML's
``<filename>`` when that file exists, else ``<id>.jpg`` (or another usual extension).

A folder without ``ImageSets`` (as annotation tools write it) uses every XML file in
``Annotations/``: a seeded shuffle (``split_seed``) of their sorted names puts ``val_fraction`` of
them (at least one) in split ``val`` and the rest in ``train``; the same files and settings give
the same split on every machine.

Labels: the index in ``classes`` when given, else in the sorted set of names found in the split
(the DataModule uses the train split's names for val too). Coordinates are kept as written (VOC's
1-based pixel numbers are not shifted); ``difficult`` objects are kept and flagged in
``Sample.difficult``. A missing or zero ``<size>`` is read from the image header instead.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.data.formats import DATA_FORMATS, DataFormat
from distill.data.records import (
    BAD_ANNOTATION,
    IMAGE_EXTENSIONS,
    DatasetError,
    DatasetIndex,
    PathLike,
    RawObject,
    RawSample,
    check_policy,
    take_first,
    validate_samples,
)


def split_ids(root: PathLike, split: str, val_fraction: float = 0.2,
              split_seed: int = 0) -> list[str]:
    """Image ids of ``ImageSets/Main/<split>.txt`` in file order, or, without ``ImageSets``, of
    the seeded split of all XML files (module docstring)."""
    root = Path(root)
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file() and not (root / "ImageSets").exists():
        return _seeded_split(root, split, val_fraction, split_seed)
    if not path.is_file():
        raise DatasetError(f"{path}: VOC split file not found (split {split!r} of root {root})")
    ids = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the split file as UTF-8 text: {exc}") from exc
    for line in lines:
        parts = line.split()
        if parts:
            ids.append(parts[0])
    if not ids:
        raise DatasetError(f"{path}: VOC split file lists no image ids")
    return ids


def _seeded_split(root: Path, split: str, val_fraction: float, split_seed: int) -> list[str]:
    """``split`` (train or val) of the XML files of ``root/Annotations``, in sorted order."""
    folder = root / "Annotations"
    stems = sorted(p.stem for p in folder.glob("*.xml")) if folder.is_dir() else []
    if len(stems) < 2:
        raise DatasetError(
            f"VOC {root}: no ImageSets/Main/{split}.txt and {len(stems)} XML file(s) in "
            f"{folder}; expected ImageSets/Main/<split>.txt files, or at least 2 annotation "
            "files to split into train and val"
        )
    if split not in ("train", "val"):
        raise DatasetError(
            f"VOC {root}: split {split!r} without ImageSets/Main/{split}.txt; a folder without "
            "ImageSets has the splits 'train' and 'val' only (a seeded split of all XML files, "
            "data.val_fraction and data.split_seed)"
        )
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"data.val_fraction: {val_fraction}; expected a fraction in (0, 1)")
    n_val = min(len(stems) - 1, max(1, round(len(stems) * val_fraction)))
    order = np.random.default_rng(split_seed).permutation(len(stems))
    chosen = set(order[:n_val].tolist()) if split == "val" else set(order[n_val:].tolist())
    return [stem for i, stem in enumerate(stems) if i in chosen]


def _image_path(root: Path, image_id: str, filename: str | None) -> Path:
    images = root / "JPEGImages"
    if filename:
        candidate = images / filename
        if candidate.is_file():
            return candidate
    for ext in IMAGE_EXTENSIONS:
        candidate = images / f"{image_id}{ext}"
        if candidate.is_file():
            return candidate
    return images / (filename or f"{image_id}.jpg")


def _text(node: ET.Element, tag: str) -> str | None:
    found = node.find(tag)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _read_xml(root: Path, index: int, image_id: str) -> tuple[RawSample, list[str | None]]:
    """One raw sample (labels unset) and the object names as written."""
    xml_path = root / "Annotations" / f"{image_id}.xml"
    raw = RawSample(str(xml_path), _image_path(root, image_id, None), image_id=index)
    if not xml_path.is_file():
        raw.problem = (BAD_ANNOTATION, "annotation file not found; expected Annotations/<id>.xml")
        return raw, []
    try:
        tree = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raw.problem = (BAD_ANNOTATION, f"XML does not parse: {exc}")
        return raw, []
    raw.image_path = _image_path(root, image_id, _text(tree, "filename"))
    size = tree.find("size")
    if size is not None:
        try:
            w, h = int(float(_text(size, "width") or 0)), int(float(_text(size, "height") or 0))
        except ValueError:
            raw.problem = (BAD_ANNOTATION, "<size> width/height are not numbers")
            return raw, []
        raw.width, raw.height = (w or None), (h or None)
    names: list[str | None] = []
    for k, node in enumerate(tree.findall("object")):
        name = _text(node, "name")
        names.append(name)
        obj = RawObject(f"object {k}", name, None, None)
        try:
            obj.difficult = bool(int(_text(node, "difficult") or 0))
        except ValueError:
            obj.difficult = False
        bnd = node.find("bndbox")
        if not name:
            obj.problem = "object has no <name>; expected a class name"
        elif bnd is None:
            obj.problem = "object has no <bndbox>; expected xmin/ymin/xmax/ymax"
        else:
            values = [_text(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax")]
            obj.written = "bndbox " + " ".join(
                f"{t}={v}" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), values, strict=True)
            )
            try:
                obj.box = tuple(float(v) for v in values)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                obj.problem = "bndbox values missing or not numbers; expected xmin/ymin/xmax/ymax"
        raw.objects.append(obj)
    return raw, names


def read_voc(root: PathLike, split: str, val_fraction: float = 0.2,
             split_seed: int = 0) -> tuple[list[RawSample], list[str]]:
    """Raw samples of a split (labels unset) and the sorted set of class names found in it."""
    root = Path(root)
    raws, found = [], set()
    for index, image_id in enumerate(split_ids(root, split, val_fraction, split_seed)):
        raw, names = _read_xml(root, index, image_id)
        raws.append(raw)
        found.update(n for n in names if n)
    return raws, sorted(found)


def voc_class_names(root: PathLike, split: str, val_fraction: float = 0.2,
                    split_seed: int = 0) -> list[str]:
    """The sorted set of object names in a split."""
    return read_voc(root, split, val_fraction, split_seed)[1]


def parse_voc(
    root: PathLike,
    split: str,
    classes: Sequence[str] | None = None,
    *,
    bad_samples: str = "error",
    max_images: int | None = None,
    verify_images: bool = True,
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> DatasetIndex:
    """Read and validate a VOC split; labels index ``classes`` (default: sorted names found).

    ``val_fraction`` and ``split_seed`` make the split of a folder without ``ImageSets``.
    """
    check_policy(bad_samples)
    raws, found = read_voc(root, split, val_fraction, split_seed)
    class_names = list(classes) if classes is not None else found
    if not class_names:
        raise DatasetError(f"VOC {root} split {split!r}: no objects, so no class names; "
                           "set data.classes")
    if len(set(class_names)) != len(class_names):
        raise DatasetError(f"VOC class list has duplicates: {class_names}")
    label_of = {name: i for i, name in enumerate(class_names)}
    for raw in raws:
        for obj in raw.objects:
            obj.label = label_of.get(obj.category)
    return validate_samples(
        take_first(raws, max_images),
        class_names,
        bad_samples=bad_samples,
        verify_images=verify_images,
        source=f"VOC {root} split {split!r}",
        category_hint=f"a name in the class list {class_names}",
    )


@dataclass
class VocSettings:
    """``format: voc`` settings (top-level ``data`` keys, or ``data.options``): the split of a
    folder without ``ImageSets`` (it does not depend on the recipe's seed)."""

    val_fraction: float = 0.2  # the fraction of the XML files in the val split
    split_seed: int = 0  # the seed of the shuffle that picks them


@DATA_FORMATS.register("voc")
class VocFormat(DataFormat):
    """Pascal VOC XML: ``data.train`` / ``data.val`` name ``ImageSets/Main`` splits."""

    settings = VocSettings
    default_splits = {"train": "train", "val": "val"}

    def parse(self, root: Path, split: str, settings: VocSettings,
              class_names: list[str] | None, **read: Any) -> DatasetIndex:
        """Read ``split``; labels index ``class_names`` (default: the sorted names found)."""
        return parse_voc(root, split, class_names, val_fraction=settings.val_fraction,
                         split_seed=settings.split_seed, **read)

    def split_classes(self, root: Path, split: str, settings: VocSettings) -> list[str]:
        """The sorted object names of ``split``."""
        return voc_class_names(root, split, settings.val_fraction, settings.split_seed)
