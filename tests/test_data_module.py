"""DetectionDataModule on tiny fixtures, synthetic wiring, and a BCCD subset (real VOC data)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from data_fixtures import CLASSES, IMAGES, coco_dict, voc_xml, write_coco, write_voc, write_yolo

from distill.data import DataConfig, DatasetError, DatasetWarning, DetectionDataModule

torch.set_num_threads(1)
S = 64


def bccd_root() -> Path | None:
    env = os.environ.get("DISTILL_BCCD_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/datasets/bccd"
    return root if (root / "Annotations").is_dir() else None


needs_bccd = pytest.mark.skipif(
    bccd_root() is None,
    reason="BCCD not found (set DISTILL_BCCD_ROOT or place it at ../shared/datasets/bccd)",
)


def write_coco_splits(root: Path, val_categories=None) -> None:
    write_coco(root)
    val = coco_dict(IMAGES[:2])
    if val_categories is not None:
        val["categories"] = val_categories
    (root / "annotations" / "val.json").write_text(json.dumps(val))


def check_batch(batch, batch_size: int, size: int = S) -> None:
    images, targets = batch
    assert images.shape == (batch_size, 3, size, size) and images.dtype == torch.float32
    assert len(targets) == batch_size
    for t in targets:
        assert set(t) == {"boxes", "labels", "image_id", "scale", "orig_size"}
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (len(t["labels"]), 4)
        assert t["labels"].dtype == torch.int64
        assert isinstance(t["image_id"], int) and isinstance(t["scale"], float)
        if len(t["boxes"]):
            assert (t["boxes"] >= 0).all() and (t["boxes"] <= size).all()


def test_coco_datamodule(tmp_path):
    write_coco_splits(tmp_path)
    cfg = DataConfig(format="coco", root=str(tmp_path), batch_size=2, num_workers=0)
    dm = DetectionDataModule(cfg, image_size=S, seed=3)
    assert dm.class_names == CLASSES and dm.num_classes == 2  # runs setup() on demand
    first = dm.train_index
    dm.setup("fit")
    assert dm.train_index is first  # idempotent: no re-parse
    summary = dm.summary()
    assert summary["train"]["images"] == 3 and summary["train"]["objects"] == 3
    assert summary["train"]["per_class"] == {"cat": 1, "dog": 2}
    assert summary["train"]["images_without_objects"] == 1
    assert summary["val"]["images"] == 2
    train = dm.train_dataloader()
    assert train.drop_last  # 3 images, batch 2: more than one batch
    batches = list(train)
    assert len(batches) == 1
    check_batch(batches[0], 2)
    val = list(dm.val_dataloader())
    assert [len(b[1]) for b in val] == [2]
    check_batch(val[0], 2)
    # the same seed shuffles the same way
    again = DetectionDataModule(cfg, image_size=S, seed=3)
    order = [t["image_id"] for t in next(iter(again.train_dataloader()))[1]]
    assert order == [t["image_id"] for t in batches[0][1]]


def test_single_batch_is_not_dropped_and_workers_persist(tmp_path):
    write_coco_splits(tmp_path)
    cfg = DataConfig(format="coco", root=str(tmp_path), batch_size=8, num_workers=1,
                     val_batch_size=1, max_train_images=2)
    dm = DetectionDataModule(cfg, image_size=S)
    loader = dm.train_dataloader()
    assert not loader.drop_last and loader.persistent_workers
    assert len(dm.train_dataset) == 2 and len(loader) == 1
    assert dm.val_dataloader().batch_size == 1


def test_val_categories_must_match_train(tmp_path):
    write_coco_splits(tmp_path, val_categories=[{"id": 3, "name": "cat"}, {"id": 7, "name": "cow"}])
    dm = DetectionDataModule(DataConfig(format="coco", root=str(tmp_path)), image_size=S)
    with pytest.raises(DatasetError, match=r"val classes \['cat', 'cow'\] differ from train"):
        dm.setup("fit")


def test_voc_val_with_a_class_unknown_to_train(tmp_path):
    write_voc(tmp_path)
    (tmp_path / "Annotations" / "v.xml").write_text(voc_xml("v", 64, 48, [("bird", 1, 1, 9, 9)]))
    write_image_like = tmp_path / "JPEGImages" / "a.png"
    (tmp_path / "JPEGImages" / "v.png").write_bytes(write_image_like.read_bytes())
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("a\nv\n")
    cfg = DataConfig(format="voc", root=str(tmp_path), num_workers=0)
    with pytest.raises(DatasetError, match=r"val split 'val' has classes \['bird'\]"):
        DetectionDataModule(cfg, image_size=S).setup()
    # with an explicit class list the classes agree: the rest is the bad_samples policy
    cfg = DataConfig(format="voc", root=str(tmp_path), num_workers=0, classes=["cat", "dog"])
    with pytest.raises(DatasetError, match="unknown category"):
        DetectionDataModule(cfg, image_size=S).setup()
    cfg.bad_samples = "drop"
    dm = DetectionDataModule(cfg, image_size=S)
    with pytest.warns(DatasetWarning, match="dropped 0 image"):
        dm.setup()
    assert dm.summary()["val"]["dropped_objects"] == 1


def test_classes_must_match_for_coco(tmp_path):
    write_coco_splits(tmp_path)
    cfg = DataConfig(format="coco", root=str(tmp_path), classes=["dog", "cat"])
    with pytest.raises(DatasetError, match=r"data.classes \['dog', 'cat'\] differ"):
        DetectionDataModule(cfg, image_size=S).setup()


def test_data_config_is_omegaconf_structured():
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    base = OmegaConf.structured(DataConfig)
    merged = OmegaConf.merge(base, {"format": "voc", "classes": ["a"], "augment": {"hflip": 0.0}})
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, DataConfig) and cfg.classes == ["a"] and cfg.augment.hflip == 0.0
    assert cfg.augment.scale_range == [0.75, 1.25] and cfg.val_batch_size is None
    with pytest.raises(ValidationError):
        OmegaConf.merge(base, {"batch_size": "many"})


def test_yolo_datamodule_uses_train_and_val_keys(tmp_path):
    write_yolo(tmp_path)
    cfg = DataConfig(format="yolo", root=str(tmp_path / "data.yaml"), batch_size=3, num_workers=0)
    dm = DetectionDataModule(cfg, image_size=S)
    assert dm.class_names == CLASSES
    check_batch(next(iter(dm.train_dataloader())), 3)


def test_bad_data_stops_setup(tmp_path):
    write_coco_splits(tmp_path)
    (tmp_path / "images" / "train" / "b.png").unlink()
    dm = DetectionDataModule(DataConfig(format="coco", root=str(tmp_path)), image_size=S)
    with pytest.raises(DatasetError, match=r"b\.png: image file not found"):
        dm.setup("fit")


def test_synthetic_format_generates_then_reads_coco(tmp_path, monkeypatch):
    synthetic = pytest.importorskip("distill.data.synthetic")
    calls = []

    def fake_ensure(root, cfg):
        calls.append((Path(root), cfg))
        if not (Path(root) / "annotations" / "val.json").exists():
            write_coco_splits(Path(root))

    monkeypatch.setattr(synthetic, "ensure_synthetic_dataset", fake_ensure, raising=False)
    cfg = DataConfig(root=str(tmp_path / "syn"), num_workers=0, batch_size=2)
    dm = DetectionDataModule(cfg, image_size=S, synthetic={"num_train": 3})
    dm.prepare_data()
    dm.setup("fit")
    assert calls and calls[0] == (tmp_path / "syn", {"num_train": 3})
    assert dm.class_names == CLASSES
    check_batch(next(iter(dm.val_dataloader())), 2)


def test_synthetic_end_to_end(tmp_path):
    synthetic = pytest.importorskip("distill.data.synthetic")
    if not hasattr(synthetic, "ensure_synthetic_dataset"):
        pytest.skip("distill.data.synthetic.ensure_synthetic_dataset not written yet")
    syn = synthetic.SyntheticConfig(num_train=3, num_val=2, image_size=64, max_size=40)
    cfg = DataConfig(root=str(tmp_path / "syn"), num_workers=0, batch_size=2)
    dm = DetectionDataModule(cfg, image_size=S, synthetic=syn)
    dm.setup("fit")
    assert dm.num_classes == len(synthetic.CLASS_NAMES)
    assert dm.summary()["train"]["images"] == 3
    check_batch(next(iter(dm.train_dataloader())), 2)


@needs_bccd
def test_bccd_subset():
    cfg = DataConfig(format="voc", root=str(bccd_root()), batch_size=4, num_workers=0,
                     max_train_images=8, max_val_images=4)
    dm = DetectionDataModule(cfg, image_size=256)
    dm.setup("fit")
    assert dm.class_names == ["Platelets", "RBC", "WBC"]
    summary = dm.summary()
    assert summary["train"]["images"] == 8 and summary["val"]["images"] == 4
    assert summary["train"]["objects"] > 50 and min(summary["train"]["per_class"].values()) > 0
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, 4, 256)
    images, targets = next(iter(dm.val_dataloader()))
    check_batch((images, targets), 4, 256)
    assert targets[0]["orig_size"] == (480, 640) and targets[0]["scale"] == pytest.approx(0.4)
    # letterboxed 640x480 -> 256x192: rows below 192 are padding
    assert images[:, :, 193:, :].abs().max() < 0.02


@needs_bccd
def test_bccd_point_boxes_are_reported_or_dropped():
    """BCCD has two zero-area (point) RBC boxes, one in train (BloodImage_00343, object 3)."""
    from distill.data.formats.voc import parse_voc

    with pytest.raises(DatasetError, match=r"BloodImage_00343\.xml.*object 3 \(category 'RBC'"):
        parse_voc(bccd_root(), "train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx = parse_voc(bccd_root(), "train", bad_samples="drop")
    assert len([w for w in caught if issubclass(w.category, DatasetWarning)]) == 1
    assert len(idx) == 205 and idx.dropped_objects == 1 and idx.dropped_images == 0
