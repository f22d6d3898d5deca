"""YOLO (Ultralytics layout, as Ultralytics and Roboflow export it) -> ``DatasetIndex``.

``data.yaml`` holds ``path`` (dataset root; relative to the YAML's folder; default: that folder),
split keys (``train``, ``val``, ``test`` or any other key a recipe names: a folder of images, a
``.txt`` list of image paths, or a list of those, relative to ``path``), ``names`` (a list, or a
dict ``{0: name, 1: ...}`` with keys 0..K-1; the class index is the label) and optionally ``nc``
(must equal the number of names).

Split paths resolve as Ultralytics' ``check_det_dataset`` does: ``path / value``; when that does
not exist and the value starts with ``../``, ``path / value[3:]``. Roboflow exports rely on this:
their ``data.yaml`` sits beside ``train/ valid/ test/`` and says ``train: ../train/images``, which
becomes ``<yaml folder>/train/images``. (Ultralytics applies the fallback to a single string; here
each entry of a list gets it too.)

Each image's label file is found as YOLO does: the last ``/images/`` of the image path becomes
``/labels/`` and the extension ``.txt``. A label line is ``class cx cy w h`` normalised to 0..1;
the image size comes from the image header. A missing or empty label file means an image without
objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def find_data_yaml(root: PathLike) -> Path:
    """``root`` itself when it is a file, else ``root/data.yaml`` (or ``data.yml``)."""
    root = Path(root)
    if root.is_file():
        return root
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: no data.yaml found; expected the YOLO data.yaml or its folder")


def load_data_yaml(path: PathLike) -> dict[str, Any]:
    """The parsed ``data.yaml`` with ``names`` normalised to a list and ``path`` resolved."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: YAML does not parse: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the file as UTF-8 text: {exc}") from exc
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{path}: missing key 'names'; expected a mapping with path, train, "
                           "val and names")
    names = data["names"]
    if isinstance(names, dict):
        names = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in names.items()}
        if not all(isinstance(k, int) for k in names):
            raise DatasetError(f"{path}: 'names' keys {list(names)}; expected class indices 0..K-1")
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DatasetError(f"{path}: 'names' keys are {keys}; expected 0..{len(keys) - 1}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: 'names' = {data['names']!r}; expected a non-empty list or "
                           "dict of class names")
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or nc != len(names)):
        raise DatasetError(f"{path}: nc = {nc!r} but 'names' has {len(names)} entries; expected "
                           f"nc: {len(names)} (or no nc)")
    if data.get("path") is not None and not isinstance(data["path"], str):
        raise DatasetError(f"{path}: path = {data['path']!r}; expected the dataset root folder, "
                           "absolute or relative to the folder of data.yaml")
    base = Path(data.get("path") or ".")
    if not base.is_absolute():
        base = path.parent / base
    return {**data, "names": [str(n) for n in names], "path": base}


def label_path(image_path: PathLike) -> Path:
    """YOLO's rule: the last ``/images/`` becomes ``/labels/``, the extension ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = sb.join(str(image_path).rsplit(sa, 1))
    return Path(text.rsplit(".", 1)[0] + ".txt")


def resolve_split_path(base: PathLike, value: str) -> tuple[Path, list[Path]]:
    """Where split entry ``value`` points, and every path tried, as Ultralytics resolves it.

    ``base / value`` made absolute (``value`` itself when absolute); when that does not exist
    and ``value`` starts with ``../``, ``base / value[3:]`` (Roboflow's ``train:
    ../train/images`` beside ``data.yaml``). The first path tried that exists is returned, else
    the last one. Paths stay as written (``..`` folded, symbolic links not followed), so the
    ``/images/`` -> ``/labels/`` rule applies to the layout the user sees: with ``images``
    a link to another folder, the labels are still looked for beside it (COCO128's layout).
    """
    tried = [Path(os.path.abspath(Path(base) / value))]
    if not tried[0].exists() and value.startswith("../"):
        tried.append(Path(os.path.abspath(Path(base) / value[3:])))
    return tried[-1], tried


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM is dropped); a DatasetError names it otherwise."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the file as UTF-8 text: {exc}") from exc


def _image_list(base: Path, entry: Any, yaml_path: Path, key: str) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        if not isinstance(item, str) or not item:
            raise DatasetError(f"{yaml_path}: {key} = {entry!r}; expected a path or list of paths")
        p, tried = resolve_split_path(base, item)
        if p.is_dir():
            images += sorted(
                f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
            )
        elif p.is_file() and p.suffix == ".txt":
            for line in _text_lines(p):
                line = line.strip()
                if line:
                    q = Path(line)
                    images.append(q if q.is_absolute() else (p.parent / q))
        elif p.exists():
            raise DatasetError(f"{yaml_path}: {key}: {p} is neither a folder nor a .txt file; "
                               "expected an image folder or a .txt list of images")
        else:
            where = (f"{tried[0]} not found (relative to path {base}), nor {tried[1]} (the "
                     "leading '../' removed, as Ultralytics and Roboflow exports do)"
                     if len(tried) > 1 else f"{p} not found")
            raise DatasetError(f"{yaml_path}: {key}: {item!r}: {where}; expected an image folder "
                               "or a .txt list of images")
    return images


def _read_labels(raw: RawSample, path: Path, num_classes: int) -> None:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raw.problem = (BAD_ANNOTATION, f"cannot read label file: {exc}")
        return
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        obj = RawObject(f"line {n}", fields[0], None, None, written=f"line {line.strip()!r}",
                        normalized=True)
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(fields) != 5 or not values:
            obj.problem = "expected 5 numbers 'class cx cy w h' (normalised 0..1)"
        elif not values[0].is_integer():
            obj.problem = "class index is not an integer"
        else:
            cls = int(values[0])
            obj.category = cls
            obj.label = cls if 0 <= cls < num_classes else None
            cx, cy, w, h = values[1:]
            obj.box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        raw.objects.append(obj)


MAX_MISSING_LABELS = 0.5  # more images than this share without a label file: a wrong layout


def check_label_files(yaml_path: Path, split: str, images: int, missing: list[Path]) -> None:
    """Stop when most of a split's images have no label file: the labels are elsewhere than
    YOLO's rule looks (a few images without one are background images, and allowed)."""
    if len(missing) <= MAX_MISSING_LABELS * images:
        return
    raise DatasetError(
        f"{yaml_path}: split {split!r}: {len(missing)} of {images} images have no label file "
        f"(e.g. {missing[0]} does not exist). Labels are looked for where YOLO looks: the last "
        "'/images/' of an image's path becomes '/labels/' and the extension '.txt'; expected a "
        "labels/ folder beside images/ with one .txt per image (an empty .txt marks an image "
        "without objects)")


def parse_yolo(
    data_yaml: PathLike,
    split: str,
    *,
    bad_samples: str = "error",
    max_images: int | None = None,
    verify_images: bool = True,
) -> DatasetIndex:
    """Read and validate split ``split`` (a key of data.yaml, e.g. ``"train"``).

    ``data_yaml`` is the YAML file or the folder holding ``data.yaml``.
    """
    check_policy(bad_samples)
    yaml_path = find_data_yaml(data_yaml)
    data = load_data_yaml(yaml_path)
    if split not in data or data[split] in (None, ""):
        keys = [k for k in data if k not in ("names", "nc", "path")]
        raise DatasetError(f"{yaml_path}: no split key {split!r}; keys are {keys}; expected "
                           "data.train / data.val to name a key of data.yaml holding image paths")
    names = data["names"]
    images = take_first(_image_list(data["path"], data[split], yaml_path, split), max_images)
    if not images:
        raise DatasetError(f"{yaml_path}: split {split!r} has no images")
    raws, missing = [], []
    for index, image in enumerate(images):
        labels = label_path(image)
        raw = RawSample(str(labels), image, image_id=index)
        if labels.is_file():
            _read_labels(raw, labels, len(names))
        else:
            missing.append(labels)
        raws.append(raw)
    check_label_files(yaml_path, split, len(images), missing)
    return validate_samples(
        raws,
        names,
        bad_samples=bad_samples,
        verify_images=verify_images,
        source=f"YOLO {yaml_path} split {split!r}",
        category_hint=f"a class index in 0..{len(names) - 1} ({names})",
    )


@DATA_FORMATS.register("yolo")
class YoloFormat(DataFormat):
    """YOLO txt labels: ``data.root`` is data.yaml (or its folder), splits are its keys."""

    default_splits = {"train": "train", "val": "val"}

    def parse(self, root: Path, split: str, settings: Any, class_names: list[str] | None,
              **read: Any) -> DatasetIndex:
        """Read the split ``split`` of data.yaml (classes from its ``names``)."""
        return parse_yolo(root, split, **read)
