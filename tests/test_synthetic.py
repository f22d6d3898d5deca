"""Tests of the embedded synthetic detection dataset generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.data.synthetic import (
    CLASS_NAMES,
    SyntheticConfig,
    _labels,
    _render,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    render_image,
)

SMALL = SyntheticConfig(num_train=20, num_val=6, seed=3)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_synthetic_dataset(root, SMALL)
    return root


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def test_deterministic(small_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    generate_synthetic_dataset(other, SMALL)
    for split in ("train", "val"):
        name = f"annotations/{split}.json"
        assert (small_root / name).read_bytes() == (other / name).read_bytes()
    for img in _load(small_root, "train")["images"]:
        name = img["file_name"]
        assert (small_root / name).read_bytes() == (other / name).read_bytes()


def test_seeds_and_splits_differ() -> None:
    a, labels_a = render_image(SMALL, "train", 0)
    b, labels_b = render_image(SyntheticConfig(seed=SMALL.seed + 1), "train", 0)
    c, _ = render_image(SMALL, "val", 0)
    d, _ = render_image(SMALL, "train", 1)
    assert not np.array_equal(a, b) and labels_a != labels_b
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    again, labels_again = render_image(SMALL, "train", 0)
    assert np.array_equal(a, again) and labels_a == labels_again


def test_coco_valid(small_root: Path) -> None:
    for split, count in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        coco = _load(small_root, split)
        cat_ids = {c["id"] for c in coco["categories"]}
        assert cat_ids == set(range(1, len(CLASS_NAMES) + 1))
        assert [c["name"] for c in coco["categories"]] == list(CLASS_NAMES)
        image_ids = [im["id"] for im in coco["images"]]
        assert len(image_ids) == count == len(set(image_ids))
        sizes = {}
        for im in coco["images"]:
            assert im["file_name"].startswith(f"images/{split}/")
            with Image.open(small_root / im["file_name"]) as pil:
                assert pil.size == (im["width"], im["height"]) == (SMALL.image_size,) * 2
                assert pil.mode == "RGB"
            sizes[im["id"]] = (im["width"], im["height"])
        ann_ids = [a["id"] for a in coco["annotations"]]
        assert len(ann_ids) == len(set(ann_ids)) and len(ann_ids) > 0
        for a in coco["annotations"]:
            assert a["image_id"] in sizes and a["category_id"] in cat_ids and a["iscrowd"] == 0
            x, y, w, h = a["bbox"]
            assert all(isinstance(v, float) for v in a["bbox"])
            width, height = sizes[a["image_id"]]
            assert w >= 4 and h >= 4 and x >= 0 and y >= 0
            assert x + w <= width and y + h <= height
            assert 0 < a["area"] <= w * h


def test_boxes_tight_around_visible_pixels() -> None:
    cfg = SyntheticConfig(seed=5, max_objects=8, clutter=10)
    checked = 0
    for index in range(6):
        _, labels, inst = _render(cfg, "train", index)
        boxes = {}
        for k in range(1, int(inst.max()) + 1):
            ys, xs = np.nonzero(inst == k)
            if len(xs):
                boxes[k] = [float(xs.min()), float(ys.min()),
                            float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
        for lab in labels:
            match = [k for k, box in boxes.items() if box == lab["bbox"]]
            assert match, lab
            assert lab["area"] == float((inst == match[0]).sum())
            checked += 1
    assert checked > 10


def test_mostly_hidden_or_tiny_objects_unlabelled() -> None:
    inst = np.zeros((64, 64), np.int32)
    inst[0:10, 0:10] = 1  # fully visible: 100 of 100 pixels
    inst[20:25, 20:26] = 2  # 30 of 100 pixels visible: dropped
    inst[40:43, 40:60] = 3  # visible, but only 3 px high: dropped
    inst[50:60, 0:5] = 4  # 50 of 100 pixels visible: kept
    objects = [(0, 100.0), (1, 100.0), (2, 60.0), (5, 100.0)]
    labels = _labels(inst, objects)
    assert [lab["category_id"] for lab in labels] == [1, 6]
    assert labels[0]["bbox"] == [0.0, 0.0, 10.0, 10.0] and labels[0]["area"] == 100.0
    assert labels[1]["bbox"] == [0.0, 50.0, 5.0, 10.0]


def test_content_statistics(small_root: Path) -> None:
    coco = _load(small_root, "train")
    longer = [max(a["bbox"][2:]) for a in coco["annotations"]]
    assert min(longer) < 24 and max(longer) > 64
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, len(CLASS_NAMES) + 1))
    with_objects = {a["image_id"] for a in coco["annotations"]}
    assert 0 < len(coco["images"]) - len(with_objects) < len(coco["images"]) // 2
    manifest = json.loads((small_root / "manifest.json").read_text())
    assert manifest["summary"]["train"]["annotations"] == len(coco["annotations"])


def test_ensure_reuses_and_regenerates(tmp_path: Path) -> None:
    root = tmp_path / "data"
    cfg = SyntheticConfig(num_train=3, num_val=2, seed=1)
    ensure_synthetic_dataset(root, cfg)
    manifest = root / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    ensure_synthetic_dataset(root, SyntheticConfig(num_train=3, num_val=2, seed=1))
    assert manifest.stat().st_mtime_ns == stamp
    ensure_synthetic_dataset(root, SyntheticConfig(num_train=4, num_val=2, seed=1))
    assert len(_load(root, "train")["images"]) == 4
    assert json.loads(manifest.read_text())["config"]["num_train"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary leftovers


def test_ensure_accepts_mapping(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ensure_synthetic_dataset(root, {"num_train": 2, "num_val": 1})
    assert len(_load(root, "val")["images"]) == 1


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        ensure_synthetic_dataset(root, SyntheticConfig(num_train=2, num_val=1))
    assert (root / "precious.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_synthetic_dataset(empty, SyntheticConfig(num_train=1, num_val=1))
    assert (empty / "manifest.json").is_file()


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        render_image(SyntheticConfig(min_size=50, max_size=20), "train", 0)
