"""COCO JSON -> ``DatasetIndex``.

Categories are mapped explicitly: sorted by ``id``, the i-th becomes label i (so COCO's 80 ids with
gaps become 0..79). Images without annotations are valid (background) samples; ``iscrowd: 1``
objects are skipped; ``bbox`` ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``.

Images are ``image_dir / file_name``. When the first image is not there, the folders of the usual
exports are tried, in this order, and the first that holds it is used:

- ``image_dir / <split folder>``: COCO 2017, the split folder being the JSON name after its last
  ``_`` (``annotations/instances_val2017.json`` -> ``val2017``);
- the JSON's own folder: Roboflow (``train/_annotations.coco.json`` beside the images);
- ``images/`` beside the JSON's folder: CVAT (``annotations/instances_default.json``, ``images/``).

Roboflow also writes a placeholder category (id 0, named after the dataset) that is the
``supercategory`` of the real ones and has no annotations: a category with no annotations whose
name is another category's supercategory is left out of the class list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from distill.data.formats import DATA_FORMATS, DataFormat
from distill.data.records import (
    BAD_ANNOTATION,
    DatasetError,
    DatasetIndex,
    PathLike,
    Problem,
    RawObject,
    RawSample,
    check_policy,
    is_number,
    take_first,
    validate_samples,
)


def _load_json(ann_file: Path) -> dict:
    if not ann_file.is_file():
        raise DatasetError(f"{ann_file}: COCO annotation file not found")
    try:
        with open(ann_file, encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{ann_file}: not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{ann_file}: cannot read the file: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: expected a JSON object with images/annotations/categories")
    keys = ("images", "annotations", "categories")
    missing = [k for k in keys if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetError(
            f"{ann_file}: missing or non-list key(s) {missing}; expected a COCO file with lists "
            "'images', 'annotations' and 'categories'"
        )
    return data


def _placeholders(data: dict) -> set[int]:
    """Ids of supercategory placeholders: no annotations, named as another's supercategory."""
    used = {a.get("category_id") for a in data["annotations"]
            if isinstance(a, dict) and isinstance(a.get("category_id"), int)}
    cats = [c for c in data["categories"] if isinstance(c, dict)]
    return {c["id"] for c in cats
            if c.get("id") not in used
            and any(o is not c and o.get("supercategory") == c.get("name") for o in cats)}


def coco_categories(data: dict, ann_file: Path) -> tuple[list[str], dict[int, int]]:
    """Class names in label order and the explicit ``category_id -> label`` map (placeholder
    supercategories left out)."""
    cats: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DatasetError(
                f"{ann_file}: categories[{i}] = {cat!r}; expected an object with an integer 'id' "
                "and a 'name'"
            )
        if cat["id"] in cats:
            raise DatasetError(f"{ann_file}: category id {cat['id']} appears twice in categories")
        cats[cat["id"]] = str(cat["name"])
    for cid in _placeholders(data):
        del cats[cid]
    if not cats:
        raise DatasetError(f"{ann_file}: 'categories' is empty; expected at least one category")
    ids = sorted(cats)
    return [cats[i] for i in ids], {cid: label for label, cid in enumerate(ids)}


def _find_image_dir(image_dir: Path, ann_file: Path, images: list) -> Path:
    """``image_dir``, or the first export folder that holds the first image (module docstring)."""
    first = next((im for im in images if isinstance(im, dict) and "file_name" in im), None)
    if first is None:
        return image_dir
    candidates = (image_dir, image_dir / ann_file.stem.rsplit("_", 1)[-1], ann_file.parent,
                  ann_file.parent.parent / "images")
    return next((d for d in candidates if (d / str(first["file_name"])).is_file()), image_dir)


def read_coco(
    ann_file: PathLike, image_dir: PathLike
) -> tuple[list[str], dict[int, int], list[RawSample], list[Problem]]:
    """Parse without touching images: class names, category map, raw samples in file order and
    the problems of annotations that belong to no image."""
    ann_file = Path(ann_file)
    data = _load_json(ann_file)
    image_dir = _find_image_dir(Path(image_dir), ann_file, data["images"])
    class_names, cat_to_label = coco_categories(data, ann_file)
    name = str(ann_file)

    by_id: dict[Any, RawSample] = {}
    raws: list[RawSample] = []
    for i, img in enumerate(data["images"]):
        ok = isinstance(img, dict) and all(k in img for k in ("id", "file_name"))
        if not ok:
            raws.append(
                RawSample(
                    name, image_dir / f"<images[{i}]>", image_id=-1,
                    problem=(BAD_ANNOTATION,
                             f"images[{i}] = {img!r}; expected 'id' and 'file_name'"),
                )
            )
            continue
        raw = RawSample(name, image_dir / str(img["file_name"]), image_id=img["id"])
        w, h = img.get("width"), img.get("height")
        if (w is not None and not is_number(w)) or (h is not None and not is_number(h)):
            raw.problem = (BAD_ANNOTATION, f"images[{i}] width/height {w!r}/{h!r} are not numbers")
        else:
            raw.width, raw.height = (int(w) if w else None), (int(h) if h else None)
        if not isinstance(img["id"], int):
            raw.problem = (BAD_ANNOTATION, f"images[{i}] id {img['id']!r}; expected an integer")
        elif img["id"] in by_id:
            raw.problem = (BAD_ANNOTATION, f"images[{i}] id {img['id']} is used twice")
        else:
            by_id[img["id"]] = raw
        raws.append(raw)

    orphans: list[Problem] = []
    for j, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        ref = f"annotations[{j}] (id {ann_id})"
        if not isinstance(ann, dict) or "image_id" not in ann:
            orphans.append(Problem(BAD_ANNOTATION, f"{name}: {ref}: no 'image_id'; expected one "
                                   "referring to an entry of 'images'", False))
            continue
        raw = by_id.get(ann["image_id"])
        if raw is None:
            orphans.append(Problem(BAD_ANNOTATION, f"{name}: {ref}: image_id {ann['image_id']!r} "
                                   "is not in 'images'; expected an id of 'images'", False))
            continue
        if ann.get("iscrowd", 0):
            continue
        cat = ann.get("category_id")
        bbox = ann.get("bbox")
        obj = RawObject(ref, cat, cat_to_label.get(cat) if isinstance(cat, int) else None, None,
                        written=f"bbox xywh {bbox!r}")
        if "category_id" not in ann or bbox is None:
            obj.problem = "missing 'category_id' or 'bbox'; expected both"
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            obj.problem = "bbox is not a list of 4 numbers; expected [x, y, width, height]"
        else:
            x, y, w, h = (float(v) for v in bbox)
            obj.box = (x, y, x + w, y + h)
        raw.objects.append(obj)
    return class_names, cat_to_label, raws, orphans


def parse_coco(
    ann_file: PathLike,
    image_dir: PathLike,
    *,
    bad_samples: str = "error",
    max_images: int | None = None,
    verify_images: bool = True,
) -> DatasetIndex:
    """Read and validate a COCO JSON split; ``file_name`` is relative to ``image_dir``.

    ``max_images`` keeps the first N entries of ``images`` (before validation).
    """
    check_policy(bad_samples)
    class_names, cat_to_label, raws, orphans = read_coco(ann_file, image_dir)
    hint = "a category id in 'categories' " + str(sorted(cat_to_label))
    return validate_samples(
        take_first(raws, max_images),
        class_names,
        bad_samples=bad_samples,
        verify_images=verify_images,
        source=f"COCO {ann_file}",
        category_hint=hint,
        problems=orphans,
    )


@dataclass
class CocoSettings:
    """``format: coco`` settings (top-level ``data`` keys, or ``data.options``)."""

    # the folder `file_name` is relative to, under root (default: root); Optional, not `| None`:
    # omegaconf < 2.4 does not understand PEP 604 unions
    image_dir: Optional[str] = None  # noqa: UP045


@DATA_FORMATS.register("coco")
class CocoFormat(DataFormat):
    """COCO JSON: ``data.train`` / ``data.val`` are JSON paths relative to ``data.root``."""

    settings = CocoSettings

    def parse(self, root: Path, split: str, settings: CocoSettings,
              class_names: list[str] | None, **read: Any) -> DatasetIndex:
        """Read the JSON ``root / split`` (classes from its ``categories``)."""
        image_dir = root / settings.image_dir if settings.image_dir else root
        return parse_coco(root / split, image_dir, **read)
