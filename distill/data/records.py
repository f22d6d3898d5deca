"""The internal dataset form (``Sample``, ``DatasetIndex``) and the validation of parsed samples.

Parsers (``coco.py``, ``voc.py``, ``yolo.py``) turn their files into ``RawSample`` objects that
keep everything as written (plus where it came from); :func:`validate_samples` checks them against
the image files and applies the bad-data policy:

- ``"error"``: every problem of the split is collected, then one :class:`DatasetError` lists the
  first few (file, image, object, what was expected) and the total count;
- ``"drop"``: a bad object is dropped, an image whose file is missing, unreadable or of another
  size than annotated is dropped whole; one :class:`DatasetWarning` reports the counts.

Box tolerance: a box may stick out of the image by up to ``max(2 px, 0.5 % of the image side)``
(``BORDER_TOLERANCE_PX``, ``BORDER_TOLERANCE_FRAC``) on each side; such boxes are clipped to the
image, not rejected (annotation tools often write ``x_max = width + 1`` or round normalised
coordinates up). A box further out, a box with zero width or height, an inverted box
(``x_max < x_min``) or non-finite values are problems. Boxes touching the border are fine.

Validation reads every image header and, with ``verify_images`` (the default), decodes each image
once (``image_check.py``: JPEGs at 1/8 scale, in parallel threads), so a file whose header is
fine but whose pixel data is truncated or corrupt is a problem of the split (an unreadable image)
before training, not an error in the middle of it.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | Path
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
BORDER_TOLERANCE_PX = 2.0
BORDER_TOLERANCE_FRAC = 0.005
MAX_LISTED_PROBLEMS = 10

# problem kinds (the keys of the counts in reports)
BAD_ANNOTATION = "bad annotation"
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
SIZE_MISMATCH = "image size mismatch"
UNKNOWN_CATEGORY = "unknown category"
BAD_BOX_VALUE = "non-finite box"
INVERTED_BOX = "inverted box"
ZERO_AREA_BOX = "zero-area box"
OUTSIDE_BOX = "box outside image"


class DatasetError(ValueError):
    """The dataset cannot be used as it is; the message says where and what was expected.

    Raised in a DataLoader worker, PyTorch re-raises it in the main process with the worker's
    traceback as the message; that is cut back to the original message (and where it came from).
    """

    def __init__(self, message: str = "") -> None:
        marker = "DatasetError: "
        if message.startswith("Caught DatasetError in ") and marker in message:
            where = message.split(".\n", 1)[0].removeprefix("Caught DatasetError ")
            message = f"{message[message.rindex(marker) + len(marker):].strip()} ({where})"
        super().__init__(message)


class DatasetWarning(UserWarning):
    """Bad samples were dropped (``bad_samples: drop``)."""


@dataclass
class Sample:
    """One image and its objects (see docs/ARCHITECTURE.md)."""

    image_path: Path
    boxes: np.ndarray  # float32 [N, 4], xyxy, absolute pixels of the original image
    labels: np.ndarray  # int64 [N], contiguous 0..K-1 (index into DatasetIndex.class_names)
    image_id: int
    width: int
    height: int
    difficult: np.ndarray | None = None  # bool [N] (VOC `difficult`), None: none is difficult

    @property
    def num_objects(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DatasetIndex:
    """A parsed, validated split: class names in label order and the samples."""

    class_names: list[str]
    samples: list[Sample]
    dropped_images: int = 0  # images dropped by `bad_samples: drop`
    dropped_objects: int = 0  # objects dropped by `bad_samples: drop` (not counting whole images)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_objects(self) -> int:
        return sum(s.num_objects for s in self.samples)

    def class_counts(self) -> dict[str, int]:
        """Number of objects per class name (every class present, zero if unseen)."""
        counts = np.zeros(len(self.class_names), dtype=np.int64)
        for s in self.samples:
            counts += np.bincount(s.labels, minlength=len(self.class_names))[: len(counts)]
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}

    def summary(self) -> dict[str, Any]:
        """Image and object counts, per class too, and what was dropped."""
        return {
            "images": len(self.samples),
            "images_without_objects": sum(1 for s in self.samples if s.num_objects == 0),
            "objects": self.num_objects,
            "per_class": self.class_counts(),
            "dropped_images": self.dropped_images,
            "dropped_objects": self.dropped_objects,
        }


@dataclass
class RawObject:
    """One object as the parser read it, before validation."""

    ref: str  # how to find it in the annotation file, e.g. "object 3" or "annotation 12 (id 57)"
    category: Any  # as written: COCO category id, VOC name, YOLO class index
    label: int | None  # contiguous label, None when the category is unknown
    box: Sequence[float] | None  # x_min, y_min, x_max, y_max (normalised if `normalized`)
    written: str = ""  # the box as written in the file, for messages (e.g. "xywh [1, 2, 3, 4]")
    normalized: bool = False  # box is in 0..1 units of the image size (YOLO)
    difficult: bool = False
    problem: str | None = None  # set by the parser when the object cannot be read at all


@dataclass
class RawSample:
    """One image entry as the parser read it, before validation."""

    annotation: str  # annotation file named in messages
    image_path: Path
    image_id: int
    width: int | None = None  # size as annotated; None: not annotated (read from the header)
    height: int | None = None
    objects: list[RawObject] = field(default_factory=list)
    problem: tuple[str, str] | None = None  # (kind, message): the entry itself is unusable


@dataclass
class Problem:
    kind: str  # one of the problem kinds above
    message: str  # "<annotation file>: image <path>: <object>: <what>; expected <what>"
    whole_image: bool  # the image is dropped, not only one object


def check_policy(bad_samples: str) -> None:
    if bad_samples not in ("error", "drop"):
        raise DatasetError(f"bad_samples must be 'error' or 'drop', got {bad_samples!r}")


def border_tolerance(side: float) -> float:
    """How far (pixels) a box may stick out of an image side of this length and still be clipped."""
    return max(BORDER_TOLERANCE_PX, BORDER_TOLERANCE_FRAC * side)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _check_object(
    obj: RawObject, width: int, height: int, category_hint: str
) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """The clipped xyxy box, or ``(None, (kind, what-and-expected))``."""
    if obj.problem is not None:
        return None, (BAD_ANNOTATION, obj.problem)
    if obj.label is None:
        return None, (UNKNOWN_CATEGORY, f"unknown category; expected {category_hint}")
    box = np.asarray(obj.box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        return None, (BAD_BOX_VALUE, "box values are not 4 finite numbers")
    if obj.normalized:
        box = box * np.array([width, height, width, height], dtype=np.float64)
    x0, y0, x1, y1 = box.tolist()
    if x1 < x0 or y1 < y0:
        return None, (INVERTED_BOX, "inverted box; expected x_max >= x_min and y_max >= y_min")
    if x1 == x0 or y1 == y0:
        return None, (
            ZERO_AREA_BOX,
            f"zero-area box (width {x1 - x0:g}, height {y1 - y0:g}); "
            "expected x_max > x_min and y_max > y_min",
        )
    tx, ty = border_tolerance(width), border_tolerance(height)
    if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty:
        return None, (
            OUTSIDE_BOX,
            f"box outside the image; expected within [0, 0, {width}, {height}] "
            f"(+/- {tx:g} x {ty:g} px tolerance, then clipped)",
        )
    clipped = np.array(
        [min(max(x0, 0.0), width), min(max(y0, 0.0), height),
         min(max(x1, 0.0), width), min(max(y1, 0.0), height)],
        dtype=np.float64,
    )
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, (
            OUTSIDE_BOX,
            f"box lies outside the image; expected overlap with [0, 0, {width}, {height}]",
        )
    return clipped, None


def _describe(obj: RawObject, width: int | None, height: int | None) -> str:
    text = f"{obj.ref} (category {obj.category!r}"
    if obj.written:
        text += f", {obj.written}"
    if obj.box is not None:
        try:
            box = np.asarray(obj.box, dtype=np.float64).reshape(-1)
            if obj.normalized and width and height:
                box = box * np.array([width, height, width, height])
            text += f", box xyxy {_fmt(box)}"
        except (TypeError, ValueError):
            pass
    return text + ")"


def _image_problem(raw: RawSample, sizes: dict[int, Any]) -> tuple[tuple[str, str] | None,
                                                                   int, int]:
    """``(problem, width, height)`` of one sample's image: missing, unreadable or not the size
    annotated (upright: EXIF orientation applied)."""
    if raw.problem is not None:
        return raw.problem, 0, 0
    if id(raw) not in sizes:
        return (MISSING_IMAGE, "image file not found; expected an image there"), 0, 0
    if isinstance(found := sizes[id(raw)], OSError):
        return (UNREADABLE_IMAGE, f"cannot open the image: {found}"), 0, 0
    width, height = found
    if raw.width and raw.height and (raw.width, raw.height) != (width, height):
        return (SIZE_MISMATCH, f"image is {width}x{height} (w x h, upright: EXIF orientation "
                               f"applied) but annotated as {raw.width}x{raw.height}; expected "
                               "the annotated size"), width, height
    return None, width, height


def _checked_sample(raw: RawSample, width: int, height: int, category_hint: str,
                    problems: list[Problem]) -> Sample:
    """The sample of ``raw`` with its valid objects; each bad one becomes a ``Problem``."""
    where = f"{raw.annotation}: image {raw.image_path}"
    boxes, labels, difficult = [], [], []
    for obj in raw.objects:
        box, problem = _check_object(obj, width, height, category_hint)
        if problem is not None:
            problems.append(Problem(
                problem[0], f"{where}: {_describe(obj, width, height)}: {problem[1]}", False))
            continue
        boxes.append(box)
        labels.append(obj.label)
        difficult.append(obj.difficult)
    return Sample(
        image_path=Path(raw.image_path),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        image_id=int(raw.image_id),
        width=width,
        height=height,
        difficult=np.asarray(difficult, dtype=bool) if any(difficult) else None,
    )


def _apply_policy(problems: list[Problem], bad_samples: str, source: str,
                  dropped_images: int, dropped_objects: int) -> None:
    """``error``: raise listing the problems; ``drop``: warn once with the counts."""
    if not problems:
        return
    counts = Counter(p.kind for p in problems)
    counts_text = ", ".join(f"{k}: {n}" for k, n in counts.most_common())
    if bad_samples == "error":
        listed = "\n".join(f"  - {p.message}" for p in problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        raise DatasetError(
            f"{source}: {len(problems)} bad sample problem(s) ({counts_text}):\n{listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nFix the annotations, or set data.bad_samples=drop to drop the bad objects "
            "(whole images when the image itself is bad)."
        )
    warnings.warn(
        f"{source}: dropped {dropped_images} image(s) and {dropped_objects} object(s) "
        f"because of {len(problems)} problem(s) ({counts_text}); first: {problems[0].message}",
        DatasetWarning,
        stacklevel=3,
    )


def validate_samples(
    raw_samples: Sequence[RawSample],
    class_names: Sequence[str],
    *,
    bad_samples: str = "error",
    source: str = "dataset",
    category_hint: str = "a known category",
    problems: list[Problem] | None = None,
    verify_images: bool = True,
) -> DatasetIndex:
    """Check the parsed samples against their image files and apply the bad-data policy.

    ``source`` names the split in messages (e.g. ``"voc split 'train' (/data/voc)"``);
    ``category_hint`` says which categories were expected (e.g. ``"a name in [...]"``);
    ``problems`` are object problems the parser found outside any sample (counted and dropped);
    ``verify_images`` decodes every image (else only headers are read).
    """
    from distill.data.image_check import check_images

    check_policy(bad_samples)
    problems = list(problems or [])
    readable = [r for r in raw_samples if r.problem is None and Path(r.image_path).is_file()]
    sizes = dict(zip(map(id, readable),
                     check_images([r.image_path for r in readable], decode=verify_images),
                     strict=True))
    samples: list[Sample] = []
    dropped_images = 0
    for raw in raw_samples:
        image_problem, width, height = _image_problem(raw, sizes)
        if image_problem is not None:
            problems.append(Problem(
                image_problem[0], f"{raw.annotation}: image {raw.image_path}: "
                f"{image_problem[1]}", True))
            dropped_images += 1
            continue
        samples.append(_checked_sample(raw, width, height, category_hint, problems))
    dropped_objects = sum(1 for p in problems if not p.whole_image)
    _apply_policy(problems, bad_samples, source, dropped_images, dropped_objects)
    if not samples:
        raise DatasetError(
            f"{source}: no usable images"
            + (f" ({dropped_images} dropped as bad)" if dropped_images else "")
        )
    return DatasetIndex(list(class_names), samples, dropped_images, dropped_objects)


def take_first(raw_samples: list[RawSample], max_images: int | None) -> list[RawSample]:
    """The first ``max_images`` entries (all when None)."""
    if max_images is None:
        return raw_samples
    if max_images < 1:
        raise DatasetError(f"max images must be >= 1 (or None), got {max_images}")
    return raw_samples[:max_images]


def is_number(value: Any) -> bool:
    """A real number (bools excluded), possibly non-finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
