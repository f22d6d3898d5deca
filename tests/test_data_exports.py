"""Datasets as annotation tools export them (Roboflow and CVAT COCO JSON, VOC without ImageSets)
and image files whose pixel data is broken (found before training, named or dropped)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from data_fixtures import CLASSES, IMAGES, coco_dict, voc_xml, write_image, write_voc

from distill.data import DataConfig, DatasetError, DatasetWarning, DetectionDataModule
from distill.data.formats.coco import parse_coco
from distill.data.formats.voc import parse_voc, split_ids
from distill.data.image_check import image_size

S = 64


def bare_coco(images=IMAGES) -> dict:
    """``coco_dict`` with bare file names (the image folder is found, not named)."""
    data = coco_dict(images)
    for im in data["images"]:
        im["file_name"] = im["file_name"].rsplit("/", 1)[-1]
    return data


def write_split(folder: Path, json_name: str, data: dict, images=IMAGES, image_folder=None):
    image_folder = image_folder or folder
    for k, (stem, w, h, _) in enumerate(images):
        write_image(image_folder / f"{stem}.png", w, h, k)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / json_name).write_text(json.dumps(data))


def roboflow_coco(images=IMAGES) -> dict:
    """Roboflow's COCO: a category 0 placeholder, parent of the real ones, never annotated."""
    data = bare_coco(images)
    data["categories"] = [{"id": 0, "name": "pets", "supercategory": "none"}] + [
        {**c, "supercategory": "pets"} for c in data["categories"]
    ]
    return data


# --------------------------------------------------------------------------- COCO exports


def test_roboflow_coco_export(tmp_path):
    """``train/_annotations.coco.json`` beside its images, the placeholder left out."""
    for split in ("train", "valid"):
        write_split(tmp_path / split, "_annotations.coco.json", roboflow_coco())
    cfg = DataConfig(format="coco", root=str(tmp_path), train="train/_annotations.coco.json",
                     val="valid/_annotations.coco.json", num_workers=0)
    dm = DetectionDataModule(cfg, image_size=S)
    assert dm.class_names == CLASSES  # not ["pets", "cat", "dog"]
    assert dm.train_index.samples[0].image_path == tmp_path / "train" / "a.png"
    assert dm.val_index.samples[0].image_path == tmp_path / "valid" / "a.png"
    assert dm.summary()["train"]["per_class"] == {"cat": 1, "dog": 2}
    assert dm.train_index.samples[0].labels.tolist() == [0, 1]


def test_a_category_is_kept_when_annotated_or_parent_of_itself_only(tmp_path):
    data = roboflow_coco()
    data["annotations"][0]["category_id"] = 0  # the "placeholder" is used: a real class
    write_split(tmp_path / "train", "_annotations.coco.json", data)
    index = parse_coco(tmp_path / "train" / "_annotations.coco.json", tmp_path)
    assert index.class_names == ["pets", *CLASSES]
    data = bare_coco()  # COCO's own "person" is its own supercategory: kept though unused
    data["categories"].append({"id": 1, "name": "person", "supercategory": "person"})
    write_split(tmp_path / "coco", "train.json", data)
    index = parse_coco(tmp_path / "coco" / "train.json", tmp_path)
    assert index.class_names == ["person", *CLASSES]


def test_cvat_coco_export(tmp_path):
    """``annotations/instances_default.json`` with ``images/`` beside the annotations folder."""
    data = bare_coco()
    data["categories"] = [{"id": 1, "name": "cat", "supercategory": ""},
                          {"id": 2, "name": "dog", "supercategory": ""}]
    for ann in data["annotations"]:
        ann["category_id"] = {3: 1, 7: 2}[ann["category_id"]]
    write_split(tmp_path / "annotations", "instances_default.json", data,
                image_folder=tmp_path / "images")
    cfg = DataConfig(format="coco", root=str(tmp_path), train="annotations/instances_default.json",
                     val="annotations/instances_default.json", num_workers=0)
    dm = DetectionDataModule(cfg, image_size=S)
    assert dm.class_names == CLASSES
    assert dm.train_index.samples[1].image_path == tmp_path / "images" / "b.png"
    assert dm.train_index.num_objects == 3


def test_image_folder_not_found_names_the_folder_given(tmp_path):
    write_split(tmp_path / "ann", "train.json", bare_coco(), image_folder=tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match=f"image {tmp_path}/a.png: image file not found"):
        parse_coco(tmp_path / "ann" / "train.json", tmp_path)


# --------------------------------------------------------------------------- VOC without ImageSets

TEN = [(f"im{k}", 40, 30, [(k % 2, 2, 2, 20, 20)]) for k in range(10)]


def write_plain_voc(root: Path, images=TEN) -> Path:
    write_voc(root, images)
    for f in (root / "ImageSets" / "Main").iterdir():
        f.unlink()
    (root / "ImageSets" / "Main").rmdir()
    (root / "ImageSets").rmdir()
    return root


def test_voc_without_imagesets_is_a_seeded_split_of_all_xml_files(tmp_path):
    root = write_plain_voc(tmp_path)
    train, val = split_ids(root, "train"), split_ids(root, "val")
    assert len(val) == 2 and len(train) == 8  # val_fraction 0.2 of 10
    assert sorted(train + val) == sorted(s for s, *_ in TEN)
    assert train == sorted(train) and val == sorted(val)
    assert split_ids(root, "val") == val  # the same split every time
    others = {tuple(split_ids(root, "val", 0.2, seed)) for seed in range(1, 6)}
    assert others - {tuple(val)}  # the seed chooses the split
    assert len(split_ids(root, "val", 0.5)) == 5

    cfg = DataConfig(format="voc", root=str(root), num_workers=0, val_fraction=0.3, split_seed=4)
    dm = DetectionDataModule(cfg, image_size=S)
    assert dm.class_names == CLASSES
    assert len(dm.train_index) == 7 and len(dm.val_index) == 3
    assert [s.image_path.stem for s in dm.val_index.samples] == split_ids(root, "val", 0.3, 4)


def test_voc_without_imagesets_bad_settings_are_named(tmp_path):
    root = write_plain_voc(tmp_path)
    with pytest.raises(DatasetError, match="splits 'train' and 'val' only"):
        parse_voc(root, "test")
    with pytest.raises(DatasetError, match="data.val_fraction: 1.5"):
        parse_voc(root, "train", val_fraction=1.5)
    one = write_plain_voc(tmp_path / "one", TEN[:1])
    with pytest.raises(DatasetError, match="1 XML file"):
        parse_voc(one, "train")
    write_voc(tmp_path / "sets")  # ImageSets present: a missing split file is still an error
    with pytest.raises(DatasetError, match="val.txt: VOC split file not found"):
        parse_voc(tmp_path / "sets", "val")


# --------------------------------------------------------------------------- broken image files


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image_is_named_or_dropped_before_training(tmp_path, ext):
    images = [(f"x{k}", 64, 48, []) for k in range(4)]
    for k, (stem, w, h, _) in enumerate(images):
        write_image(tmp_path / "JPEGImages" / f"{stem}{ext}", w, h, k)
    (tmp_path / "Annotations").mkdir()
    for stem, w, h, _ in images:
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(
            voc_xml(stem, w, h, [(0, 1, 1, 30, 30)]).replace(".png", ext))
    bad = tmp_path / "JPEGImages" / f"x1{ext}"
    truncate(bad)
    assert image_size(bad) == (64, 48)  # the header is intact: only decoding finds it
    with pytest.raises(DatasetError, match=f"image {bad}: cannot open the image: .*truncated"):
        parse_voc(tmp_path, "train", val_fraction=0.25)
    assert len(parse_voc(tmp_path, "train", val_fraction=0.25, verify_images=False)) == 3

    cfg = DataConfig(format="voc", root=str(tmp_path), num_workers=1, bad_samples="drop",
                     val_fraction=0.25, split_seed=1)
    dm = DetectionDataModule(cfg, image_size=S)
    assert "x1" in split_ids(tmp_path, "train", 0.25, 1)
    with pytest.warns(DatasetWarning, match="dropped 1 image"):
        dm.setup("fit")
    assert dm.summary()["train"]["dropped_images"] == 1 and len(dm.train_index) == 2
    batches = list(dm.train_dataloader())  # in a worker process: every image decodes
    assert sum(len(targets) for _, targets in batches) == 2


def test_a_file_broken_after_setup_fails_in_the_worker_without_its_traceback(tmp_path):
    write_voc(tmp_path, [(f"y{k}", 64, 48, [(0, 1, 1, 30, 30)]) for k in range(2)])
    cfg = DataConfig(format="voc", root=str(tmp_path), val="train", num_workers=1, batch_size=2)
    dm = DetectionDataModule(cfg, image_size=S)
    dm.setup("fit")
    bad = tmp_path / "JPEGImages" / "y0.png"
    truncate(bad)
    with warnings.catch_warnings(), pytest.raises(DatasetError) as err:
        warnings.simplefilter("ignore")
        next(iter(dm.train_dataloader()))
    message = str(err.value)
    assert message.startswith(f"image {bad}: cannot be decoded")
    assert "Traceback" not in message and message.endswith("(in DataLoader worker process 0)")


# --------------------------------------------------------------------------- image kinds


def test_training_reads_images_as_inference_does(tmp_path):
    """EXIF-rotated (sizes checked upright), 16-bit (scaled, not clipped) and RGBA (over white)
    images give the pixels ``distill.images.read_image`` gives."""
    import numpy as np
    from PIL import Image

    from distill.data.dataset import load_image
    from distill.images import read_image

    rotated = tmp_path / "JPEGImages" / "r.jpg"
    rotated.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 x 48, shown 48 x 64
    Image.new("RGB", (64, 48), (200, 10, 10)).save(rotated, exif=exif)
    deep = np.full((30, 40), 40000, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "JPEGImages" / "d.png")
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(tmp_path / "JPEGImages" / "t.png")
    (tmp_path / "Annotations").mkdir()
    for stem, w, h, ext in (("r", 48, 64, ".jpg"), ("d", 40, 30, ".png"), ("t", 40, 30, ".png")):
        xml = voc_xml(stem, w, h, [(0, 1, 1, 20, 20)]).replace(".png", ext)
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(xml)
    index = parse_voc(tmp_path, "train", val_fraction=0.34, split_seed=0)
    index.samples += parse_voc(tmp_path, "val", val_fraction=0.34, split_seed=0).samples
    assert {s.image_path.stem: (s.width, s.height) for s in index.samples} == {
        "r": (48, 64), "d": (40, 30), "t": (40, 30)}
    for sample in index.samples:
        image = load_image(sample)
        assert torch.equal(image, read_image(sample.image_path)), sample.image_path.name
    pixels = {s.image_path.stem: load_image(s) for s in index.samples}
    assert pixels["r"].shape == (3, 64, 48)
    assert int(pixels["d"].max()) == 40000 >> 8  # not clipped to 255
    assert int(pixels["t"].min()) == 255  # transparent over white
