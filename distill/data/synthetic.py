"""Embedded, deterministic synthetic object-detection dataset (COCO JSON + PNG).

Every image is drawn from its own ``numpy.random.Generator`` seeded with ``(seed, split, index)``,
so the same settings always give identical annotations and pixels. Images have textured, noisy
backgrounds, unlabelled distractors (bars, blobs, arcs, lines), objects of random colour at many
scales, partial occlusion and clipping at the border. Boxes are tight around the *visible* pixels,
tracked with a per-pixel instance map; objects that end up mostly hidden are not labelled.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from distill.data.settings import SyntheticConfig  # the settings live with the schema

GENERATOR_VERSION = "synthetic-shapes-v1"
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star")
SPLITS: tuple[str, ...] = ("train", "val")

_SUPERSAMPLE = 4  # anti-aliasing factor for rasterising shapes
_MIN_VISIBLE = 0.4  # an object with less of its area visible is not labelled
_MIN_BOX = 4  # an object whose visible box is thinner than this (pixels) is not labelled
_MAX_OVERLAP = 0.45  # max intersection / smaller-box-area between two objects when placing


def _as_config(cfg: Any) -> SyntheticConfig:
    """Accept a ``SyntheticConfig`` or any mapping of its fields (e.g. an omegaconf node)."""
    if isinstance(cfg, SyntheticConfig):
        out = cfg
    elif isinstance(cfg, Mapping):
        names = [f.name for f in fields(SyntheticConfig) if f.name in cfg]
        out = SyntheticConfig(**{name: cfg[name] for name in names})
    else:
        raise TypeError(f"expected SyntheticConfig or a mapping, got {type(cfg).__name__}")
    return out.check()


# ----------------------------------------------------------------------------- geometry


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    """Vertices of a regular n-gon, shape [n, 2]."""
    t = phase + np.arange(n) * (2 * math.pi / n)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _unit_shape(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Polygons (unit scale, fill value 255 = inside, 0 = hole) describing one class's shape."""
    if name == "circle":
        return [(_regular(48), 255)]
    if name == "square":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)]
    if name == "triangle":
        return [(_regular(3, phase=-math.pi / 2), 255)]
    if name == "cross":
        a = rng.uniform(0.28, 0.4)
        p = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a),
             (-1, a), (-1, -a), (-a, -a)]
        return [(np.array(p, float), 255)]
    if name == "ring":
        return [(_regular(48), 255), (_regular(48, rng.uniform(0.45, 0.62)), 0)]
    if name == "star":
        outer = _regular(5, phase=-math.pi / 2)
        inner = _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
        return [(np.stack([outer, inner], axis=1).reshape(-1, 2), 255)]
    raise ValueError(f"unknown shape {name!r}")


def _place(polys: list[tuple[np.ndarray, int]], size: float, cx: float, cy: float,
           angle: float, aspect: float = 1.0) -> list[tuple[np.ndarray, int]]:
    """Squash, rotate, then scale so the box's longer side is ``size`` and centre it at (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    moved = [((p * [1.0, aspect]) @ rot.T, f) for p, f in polys]
    pts = np.concatenate([p for p, _ in moved])
    lo, hi = pts.min(0), pts.max(0)
    k = size / max(hi - lo)
    mid = (lo + hi) / 2
    return [((p - mid) * k + [cx, cy], f) for p, f in moved]


def _raster(polys: list[tuple[np.ndarray, int]], lines: list[tuple[np.ndarray, float]] = ()
            ) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage (float32 [h, w] in 0..1) of polygons/polylines, and its top-left."""
    pts = np.concatenate([p for p, _ in polys] + [p for p, _ in lines])
    pad = 2 + max([w for _, w in lines], default=0.0)
    x0, y0 = (np.floor(pts.min(0) - pad)).astype(int)
    x1, y1 = (np.ceil(pts.max(0) + pad)).astype(int)
    w, h, f = int(x1 - x0), int(y1 - y0), _SUPERSAMPLE
    canvas = Image.new("L", (w * f, h * f), 0)
    draw = ImageDraw.Draw(canvas)
    for p, fill in polys:
        draw.polygon([tuple(q) for q in ((p - [x0, y0]) * f).tolist()], fill=fill)
    for p, width in lines:
        xy = [tuple(q) for q in ((p - [x0, y0]) * f).tolist()]
        draw.line(xy, fill=255, width=max(1, round(width * f)), joint="curve")
    cov = np.asarray(canvas, dtype=np.float32).reshape(h, f, w, f).mean(axis=(1, 3)) / 255.0
    return cov, int(x0), int(y0)


# ----------------------------------------------------------------------------- painting


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (float 0..255) from HSV space."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.15, 1.0), rng.uniform(0.2, 1.0))
    return np.array([r, g, b], np.float32) * 255


def _smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Low-frequency colour noise in -1..1, float32 [n, n, 3]."""
    small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((n, n), Image.BICUBIC)
    return np.asarray(big, np.float32) / 127.5 - 1.0


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Textured background: base colour, smooth noise and maybe stripes or a checkerboard."""
    img = _colour(rng) + _smooth_noise(rng, n, int(rng.integers(3, 9))) * rng.uniform(15, 60)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    kind = rng.integers(3)
    if kind == 1:  # stripes
        t = rng.uniform(0, math.pi)
        wave = np.sin((xx * math.cos(t) + yy * math.sin(t)) * (2 * math.pi / rng.uniform(6, 30)))
        img += wave[..., None] * (_colour(rng) - 128) * rng.uniform(0.1, 0.3)
    elif kind == 2:  # checkerboard
        cell = rng.uniform(8, 40)
        board = ((xx // cell + yy // cell) % 2 * 2 - 1).astype(np.float32)
        img += board[..., None] * rng.uniform(8, 25)
    return img


def _fill(rng: np.random.Generator, colour: np.ndarray, h: int, w: int) -> np.ndarray:
    """Object texture: colour with a shading gradient and, sometimes, stripes; [h, w, 3]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(0, 2 * math.pi)
    grad = (xx * math.cos(t) + yy * math.sin(t)) / max(h, w, 1) * rng.uniform(-50, 50)
    tex = colour + grad[..., None]
    if rng.random() < 0.25:
        t2 = rng.uniform(0, math.pi)
        band = ((xx * math.cos(t2) + yy * math.sin(t2)) // rng.uniform(2, 5)) % 2
        tex = np.where(band[..., None] > 0, tex * rng.uniform(0.5, 0.8), tex)
    return tex


def _composite(img: np.ndarray, cov: np.ndarray, x0: int, y0: int, tex: np.ndarray | None,
               colour: np.ndarray, inst: np.ndarray, inst_id: int | None) -> None:
    """Blend ``colour``/``tex`` into ``img`` by coverage; write ``inst_id`` where coverage >= .5."""
    n = img.shape[0]
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + cov.shape[1], n), min(y0 + cov.shape[0], n)
    if ax1 <= ax0 or ay1 <= ay0:
        return
    a = cov[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    src = colour if tex is None else tex[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    region = img[ay0:ay1, ax0:ax1]
    region += (src - region) * a[..., None]
    if inst_id is not None:
        inst[ay0:ay1, ax0:ax1][a >= 0.5] = inst_id


def _distractor(rng: np.random.Generator, n: int, cfg: SyntheticConfig, foreground: bool
                ) -> tuple[np.ndarray, int, int]:
    """Coverage of one unlabelled distractor: line/polyline, arc, bar or irregular blob."""
    size = math.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size)))
    cx, cy = rng.uniform(0, n, 2)
    kind = "line" if foreground else ("line", "arc", "bar", "blob")[rng.integers(4)]
    width = rng.uniform(1.0, 4.0)
    if kind == "line":
        k = int(rng.integers(2, 5))
        steps = rng.normal(0, size / 2, (k, 2))
        return _raster([], [(np.cumsum(steps, 0) + [cx, cy], width)])
    if kind == "arc":
        start, span = rng.uniform(0, 2 * math.pi), rng.uniform(0.6, 2.4)
        t = start + np.linspace(0, span, 24)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * size / 2 + [cx, cy]
        return _raster([], [(pts, width * 1.5)])
    if kind == "bar":
        bar = [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)]
        if rng.random() < 0.5:
            bar = [(_regular(32), 255)]
        return _raster(_place(bar, size, cx, cy, rng.uniform(0, math.pi), rng.uniform(0.12, 0.4)))
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    r = np.ones_like(t)
    for harmonic in (2, 3, 4, 5):
        r += rng.uniform(0.0, 0.22) * np.cos(harmonic * t + rng.uniform(0, 2 * math.pi))
    blob = [(np.stack([np.cos(t), np.sin(t)], 1) * r[:, None], 255)]
    return _raster(_place(blob, size, cx, cy, 0.0, rng.uniform(0.6, 1.0)))


def render_image(cfg: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, list[dict]]:
    """Draw one image (uint8 [n, n, 3]) and its labels ({"category_id", "bbox", "area"})."""
    pixels, labels, _ = _render(_as_config(cfg), split, index)
    return pixels, labels


def _render(cfg: SyntheticConfig, split: str, index: int
            ) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Like ``render_image``, also returning the instance map (0 = no object, k = k-th drawn)."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
    n = cfg.image_size
    img = _background(rng, n)
    inst = np.zeros((n, n), np.int32)
    num_clutter = int(rng.integers(0, 2 * cfg.clutter + 1))
    num_front = int((rng.random(num_clutter) < 0.3).sum())  # lines drawn over the objects
    for _ in range(num_clutter - num_front):
        cov, x0, y0 = _distractor(rng, n, cfg, foreground=False)
        _composite(img, cov, x0, y0, None, _colour(rng), inst, None)
    if cfg.max_objects == 0 or (cfg.min_objects == 0 and index % 10 == 5):
        num = 0  # a steady share of images without objects
    else:
        num = int(rng.integers(max(cfg.min_objects, 1), cfg.max_objects + 1))
    boxes: list[np.ndarray] = []
    objects: list[tuple[int, float]] = []  # (class index, full coverage area)
    for _ in range(num):
        label = int(rng.integers(len(CLASS_NAMES)))
        unit = _unit_shape(CLASS_NAMES[label], rng)
        size = math.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size)))
        angle, aspect = rng.uniform(0, 2 * math.pi), rng.uniform(0.88, 1.0)
        for _try in range(20):
            cx, cy = rng.uniform(0, n, 2)
            box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
            if all(_overlap(box, b) <= _MAX_OVERLAP for b in boxes):
                break
        else:
            continue
        boxes.append(box)
        cov, x0, y0 = _raster(_place(unit, size, cx, cy, angle, aspect))
        region = img[max(y0, 0):y0 + cov.shape[0], max(x0, 0):x0 + cov.shape[1]]
        local = region.reshape(-1, 3).mean(0) if region.size else np.full(3, 128.0)
        colour = max((_colour(rng) for _ in range(6)), key=lambda c: np.abs(c - local).sum())
        tex = _fill(rng, colour, *cov.shape)
        objects.append((label, float((cov >= 0.5).sum())))
        _composite(img, cov, x0, y0, tex, colour, inst, len(objects))
    for _ in range(num_front):  # occluders: they hide the pixels of objects beneath them
        cov, x0, y0 = _distractor(rng, n, cfg, foreground=True)
        _composite(img, cov, x0, y0, None, _colour(rng), inst, 0)
    img += rng.normal(0, rng.uniform(2, 10), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), _labels(inst, objects), inst


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two xyxy boxes divided by the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / small)


def _labels(inst: np.ndarray, objects: list[tuple[int, float]]) -> list[dict]:
    """Tight boxes of each object's visible pixels; drop mostly hidden or tiny objects."""
    counts = np.bincount(inst.ravel(), minlength=len(objects) + 1)
    out = []
    for k, (label, full) in enumerate(objects, start=1):
        if full <= 0 or counts[k] < _MIN_VISIBLE * full:
            continue
        ys, xs = np.nonzero(inst == k)
        x, y = int(xs.min()), int(ys.min())
        w, h = int(xs.max()) + 1 - x, int(ys.max()) + 1 - y
        if w < _MIN_BOX or h < _MIN_BOX:
            continue
        out.append({"category_id": label + 1, "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(counts[k])})
    return out


# ----------------------------------------------------------------------------- writing


def _size_bucket(longer: float) -> str:
    """Name of the size bucket (longer box side, pixels)."""
    for edge, name in ((16, "<16"), (32, "16-32"), (64, "32-64"), (128, "64-128")):
        if longer < edge:
            return name
    return ">=128"


def _write_split(root: Path, cfg: SyntheticConfig, split: str, count: int) -> dict:
    """Render one split into ``root`` and return its summary."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    per_class = dict.fromkeys(CLASS_NAMES, 0)
    sizes = dict.fromkeys(("<16", "16-32", "32-64", "64-128", ">=128"), 0)
    empty = 0
    for index in range(count):
        pixels, labels, _ = _render(cfg, split, index)
        file_name = f"images/{split}/{index:06d}.png"
        Image.fromarray(pixels).save(root / file_name, compress_level=1)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": cfg.image_size,
                       "height": cfg.image_size})
        empty += not labels
        for ann in labels:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann,
                                "iscrowd": 0})
            per_class[CLASS_NAMES[ann["category_id"] - 1]] += 1
            sizes[_size_bucket(max(ann["bbox"][2:]))] += 1
    coco = {
        "info": {"description": f"distill synthetic shapes ({split})",
                 "version": GENERATOR_VERSION},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(CLASS_NAMES)],
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    return {"images": count, "annotations": len(annotations), "empty_images": empty,
            "per_class": per_class, "sizes": sizes}


def _read_manifest(root: Path) -> dict | None:
    """The manifest in ``root``, or None if missing or unreadable."""
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _check_replaceable(root: Path) -> None:
    """Refuse to touch a non-empty folder that we did not generate."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and \
            _read_manifest(root) is None:
        raise FileExistsError(
            f"{root} exists, is not empty and has no manifest.json from the synthetic generator; "
            "refusing to overwrite it. Choose another folder or remove it yourself.")


def _matches(root: Path, cfg: SyntheticConfig) -> bool:
    """Whether ``root`` holds a complete dataset generated with exactly these settings."""
    manifest = _read_manifest(root)
    return (manifest is not None and manifest.get("version") == GENERATOR_VERSION
            and manifest.get("config") == asdict(cfg)
            and all((root / "annotations" / f"{s}.json").is_file() for s in SPLITS))


def generate_synthetic_dataset(root: Path, cfg: SyntheticConfig) -> dict:
    """Generate the dataset into ``root`` (replacing an earlier generated one); return a summary.

    Everything is written to a temporary sibling folder which is renamed into place at the end,
    so an interrupted run never leaves a half-written dataset at ``root``.
    """
    cfg = _as_config(cfg)
    root = Path(root)
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        summary = {split: _write_split(tmp, cfg, split, count)
                   for split, count in zip(SPLITS, (cfg.num_train, cfg.num_val), strict=True)}
        manifest = {"generator": __name__, "version": GENERATOR_VERSION, "config": asdict(cfg),
                    "class_names": list(CLASS_NAMES), "summary": summary}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _check_replaceable(root)
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            root.rename(old)
        try:
            tmp.rename(root)
        except OSError:
            if not _matches(root, cfg):  # lost a race against another process: fine if equal
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def ensure_synthetic_dataset(root: Path, cfg: SyntheticConfig) -> None:
    """Generate the dataset at ``root`` unless it is already there with the same settings."""
    cfg = _as_config(cfg)
    root = Path(root)
    if not _matches(root, cfg):
        generate_synthetic_dataset(root, cfg)
