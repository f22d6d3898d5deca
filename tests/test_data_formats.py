"""COCO / VOC / YOLO parsers on one tiny dataset written in all three formats, and bad data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    CLASSES,
    IMAGES,
    coco_dict,
    write_coco,
    write_image,
    write_voc,
    write_yolo,
)

from distill.data import DatasetError, DatasetWarning
from distill.data.formats.coco import parse_coco
from distill.data.formats.voc import parse_voc
from distill.data.formats.yolo import parse_yolo


def load(fmt: str, root: Path, policy: str = "error", **kw):
    if fmt == "coco":
        return parse_coco(root / "annotations" / "train.json", root, bad_samples=policy, **kw)
    if fmt == "voc":
        return parse_voc(root, "train", kw.pop("classes", None), bad_samples=policy, **kw)
    return parse_yolo(root, "train", bad_samples=policy, **kw)


WRITERS = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}


# --------------------------------------------------------------------------- good data


def test_three_formats_give_the_same_index(tmp_path):
    indices = {}
    for fmt, writer in WRITERS.items():
        writer(tmp_path / fmt)
        indices[fmt] = load(fmt, tmp_path / fmt)
    ref = indices["coco"]
    assert ref.class_names == CLASSES
    assert [s.image_path.stem for s in ref.samples] == ["a", "b", "c"]
    for sample, (_, w, h, objs) in zip(ref.samples, IMAGES, strict=True):
        assert (sample.width, sample.height) == (w, h)
        np.testing.assert_allclose(sample.boxes, np.array([o[1:] for o in objs]).reshape(-1, 4))
        assert sample.labels.tolist() == [o[0] for o in objs]
    for fmt, idx in indices.items():
        assert idx.class_names == ref.class_names, fmt
        assert len(idx.samples) == len(ref.samples), fmt
        for s, r in zip(idx.samples, ref.samples, strict=True):
            assert s.image_path.name == r.image_path.name, fmt
            assert s.image_id == r.image_id, fmt
            assert (s.width, s.height) == (r.width, r.height), fmt
            assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(s.labels), 4)
            assert s.labels.dtype == np.int64
            np.testing.assert_allclose(s.boxes, r.boxes, atol=1e-3, err_msg=fmt)
            assert s.labels.tolist() == r.labels.tolist(), fmt
    assert indices["coco"].samples[2].boxes.shape == (0, 4)


def test_coco_category_ids_mapped_by_sorted_id_and_crowd_skipped(tmp_path):
    write_coco(tmp_path)
    idx = load("coco", tmp_path)
    # categories listed dog(7) first, but cat has the smaller id -> label 0
    assert idx.class_names == ["cat", "dog"]
    assert idx.samples[0].labels.tolist() == [0, 1]  # the crowd box is not there
    assert idx.num_objects == 3


def test_yolo_names_as_list_and_voc_explicit_classes(tmp_path):
    write_yolo(tmp_path / "y", names=["cat", "dog"])
    assert load("yolo", tmp_path / "y").class_names == CLASSES
    write_voc(tmp_path / "v")
    idx = load("voc", tmp_path / "v", classes=["dog", "cat", "bird"])
    assert idx.class_names == ["dog", "cat", "bird"]
    assert idx.samples[0].labels.tolist() == [1, 0]


def test_box_slightly_outside_is_clipped_not_rejected(tmp_path):
    images = [("a", 64, 48, [(0, -1, -1.5, 65, 49.5)]), ("b", 40, 60, [(1, 0, 0, 40, 60)])]
    write_voc(tmp_path, images)
    idx = load("voc", tmp_path, classes=CLASSES)
    np.testing.assert_allclose(idx.samples[0].boxes, [[0, 0, 64, 48]])


def test_coco_2017_layout_split_folder(tmp_path):
    data = coco_dict()
    for im in data["images"]:
        im["file_name"] = im["file_name"].split("/")[-1]
    write_coco(tmp_path, data)
    (tmp_path / "images" / "train").rename(tmp_path / "images" / "val2017")
    ann = tmp_path / "annotations" / "instances_val2017.json"
    (tmp_path / "annotations" / "train.json").rename(ann)
    idx = parse_coco(ann, tmp_path / "images")
    assert idx.samples[0].image_path == tmp_path / "images" / "val2017" / "a.png"


def test_max_images_takes_the_first(tmp_path):
    write_coco(tmp_path)
    idx = load("coco", tmp_path, max_images=2)
    assert [s.image_path.stem for s in idx.samples] == ["a", "b"]


def test_validation_reads_headers_only_without_verify_images(tmp_path, monkeypatch):
    from PIL import ImageFile

    write_coco(tmp_path)

    def no_decode(self, *a, **k):
        raise AssertionError("validation decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    assert len(load("coco", tmp_path, verify_images=False)) == 3
    with pytest.raises(DatasetError, match="(?s)3 bad sample problem.*validation decoded pixels"):
        load("coco", tmp_path)  # the default decodes every image


# --------------------------------------------------------------------------- bad data


def _coco_edit(fn):
    def mutate(root: Path):
        data = coco_dict()
        fn(data)
        write_coco(root, data)
    return mutate


def _ann(data, k=0):
    return data["annotations"][k]


def _write_then(writer, fn):
    def mutate(root: Path):
        writer(root)
        fn(root)
    return mutate


def _replace(path: str, old: str, new: str):
    def fn(root: Path):
        p = root / path
        p.write_text(p.read_text().replace(old, new))
    return fn


# id, format, mutate(root), substrings of the error, (images, objects) left under drop;
# None: the whole split is unusable, both policies raise
CASES = [
    ("coco-missing-image", "coco", _write_then(write_coco, lambda r: (r / "images/train/a.png")
                                                .unlink()),
     ["train.json", "a.png", "not found"], (2, 1)),
    ("coco-unreadable-image", "coco", _write_then(write_coco, lambda r: (r / "images/train/a.png")
                                                   .write_bytes(b"not an image")),
     ["train.json", "a.png", "cannot open"], (2, 1)),
    ("coco-size-mismatch", "coco", _coco_edit(lambda d: d["images"][0].update(width=65)),
     ["train.json", "a.png", "64x48", "65x48"], (2, 1)),
    ("coco-zero-area", "coco", _coco_edit(lambda d: _ann(d).update(bbox=[4, 6, 0, 34])),
     ["train.json", "a.png", "annotations[0]", "category 3", "[4, 6, 0, 34]", "zero-area"],
     (3, 2)),
    ("coco-inverted", "coco", _coco_edit(lambda d: _ann(d).update(bbox=[30, 6, -26, 34])),
     ["train.json", "a.png", "annotations[0]", "[30, 6, -26, 34]", "inverted",
      "x_max >= x_min"], (3, 2)),
    ("coco-outside", "coco", _coco_edit(lambda d: _ann(d, 1).update(bbox=[32, 10, 80, 34])),
     ["train.json", "a.png", "annotations[1]", "category 7", "outside", "[0, 0, 64, 48]"],
     (3, 2)),
    ("coco-unknown-category", "coco", _coco_edit(lambda d: _ann(d).update(category_id=5)),
     ["train.json", "a.png", "annotations[0]", "category 5", "unknown category", "[3, 7]"],
     (3, 2)),
    ("coco-missing-bbox", "coco", _coco_edit(lambda d: _ann(d, 2).pop("bbox")),
     ["train.json", "b.png", "annotations[2]", "missing 'category_id' or 'bbox'"], (3, 2)),
    ("coco-bad-image-id", "coco", _coco_edit(lambda d: _ann(d).update(image_id=42)),
     ["train.json", "annotations[0]", "image_id 42"], (3, 2)),
    ("coco-json-syntax", "coco", _write_then(write_coco, lambda r: (
        r / "annotations/train.json").write_text('{"images": [')),
     ["train.json", "not valid JSON"], None),
    ("coco-missing-key", "coco", _coco_edit(lambda d: d.pop("categories")),
     ["train.json", "categories"], None),
    ("coco-missing-file", "coco", lambda r: write_image(r / "x.png", 8, 8),
     ["train.json", "not found"], None),
    ("voc-xml-syntax", "voc", _write_then(write_voc, lambda r: (
        r / "Annotations/a.xml").write_text("<annotation><size>")),
     ["a.xml", "XML does not parse"], (2, 1)),
    ("voc-unknown-name", "voc", _write_then(write_voc, _replace("Annotations/a.xml",
                                                                "<name>dog", "<name>cow")),
     ["a.xml", "a.png", "object 1", "'cow'", "unknown category", "['cat', 'dog']"], (3, 2)),
    ("voc-size-mismatch", "voc", _write_then(write_voc, _replace("Annotations/b.xml",
                                                                 "<width>40", "<width>41")),
     ["b.xml", "b.png", "40x60", "41x60"], (2, 2)),
    ("voc-zero-area", "voc", _write_then(write_voc, _replace("Annotations/a.xml",
                                                             "<xmax>30", "<xmax>4")),
     ["a.xml", "object 0", "'cat'", "xmin=4", "xmax=4", "zero-area"], (3, 2)),
    ("voc-outside", "voc", _write_then(write_voc, _replace("Annotations/b.xml",
                                                           "<ymax>60", "<ymax>70")),
     ["b.xml", "b.png", "object 0", "ymax=70", "outside"], (3, 2)),
    ("voc-missing-xml", "voc", _write_then(write_voc, lambda r: (r / "Annotations/c.xml")
                                           .unlink()),
     ["c.xml", "not found"], (2, 3)),
    ("voc-missing-split", "voc", lambda r: (r / "ImageSets/Main").mkdir(parents=True),
     ["train.txt", "split file not found"], None),
    ("yolo-class-out-of-range", "yolo", _write_then(write_yolo, _replace(
        "labels/train/b.txt", "1 ", "5 ")),
     ["b.txt", "b.png", "line 1", "category 5", "unknown category", "0..1"], (3, 2)),
    ("yolo-outside", "yolo", _write_then(write_yolo, lambda r: (r / "labels/train/b.txt")
                                         .write_text("1 1.2 0.5 0.5 0.5\n")),
     ["b.txt", "b.png", "line 1", "1.2", "outside"], (3, 2)),
    ("yolo-zero-area", "yolo", _write_then(write_yolo, lambda r: (r / "labels/train/b.txt")
                                           .write_text("1 0.5 0.5 0 0.5\n")),
     ["b.txt", "line 1", "zero-area"], (3, 2)),
    ("yolo-bad-line", "yolo", _write_then(write_yolo, lambda r: (r / "labels/train/b.txt")
                                          .write_text("1 0.5 0.5\n")),
     ["b.txt", "line 1", "expected 5 numbers"], (3, 2)),
    ("yolo-unreadable-image", "yolo", _write_then(write_yolo, lambda r: (
        r / "images/train/a.png").write_bytes(b"\x89PNG broken")),
     ["a.txt", "a.png", "cannot open"], (2, 1)),
    ("yolo-missing-image", "yolo", _write_then(write_yolo, lambda r: (
        (r / "train.txt").write_text("images/train/a.png\nimages/train/zz.png\n"),
        _replace("data.yaml", "train: images/train", "train: train.txt")(r))),
     ["zz.png", "not found"], (1, 2)),
    ("yolo-yaml-syntax", "yolo", _write_then(write_yolo, lambda r: (r / "data.yaml")
                                             .write_text("names: [cat, dog\ntrain: x\n")),
     ["data.yaml", "does not parse"], None),
    ("yolo-missing-names", "yolo", _write_then(write_yolo, lambda r: (r / "data.yaml")
                                               .write_text("train: images/train\n")),
     ["data.yaml", "names"], None),
    ("yolo-missing-split", "yolo", _write_then(write_yolo, _replace("data.yaml", "train:",
                                                                    "training:")),
     ["data.yaml", "'train'"], None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_data_error_policy(tmp_path, case):
    _, fmt, mutate, expected, _ = case
    mutate(tmp_path)
    kw = {"classes": CLASSES} if fmt == "voc" else {}
    with pytest.raises(DatasetError) as info:
        load(fmt, tmp_path, "error", **kw)
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_data_drop_policy(tmp_path, case):
    _, fmt, mutate, expected, left = case
    mutate(tmp_path)
    kw = {"classes": CLASSES} if fmt == "voc" else {}
    if left is None:  # nothing to drop: the split itself is unusable
        with pytest.raises(DatasetError):
            load(fmt, tmp_path, "drop", **kw)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx = load(fmt, tmp_path, "drop", **kw)
    reports = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(reports) == 1, [str(w.message) for w in caught]
    assert "dropped" in str(reports[0].message)
    assert expected[0] in str(reports[0].message)
    assert (len(idx), idx.num_objects) == left
    for s in idx.samples:
        assert s.boxes.shape == (len(s.labels), 4)
        assert np.all(s.boxes[:, 2:] > s.boxes[:, :2])


def test_error_lists_first_problems_and_total(tmp_path):
    objs = [(0, 5 + i, 5, 5 + i, 9) for i in range(12)]  # 12 zero-width boxes
    write_voc(tmp_path, [("a", 64, 48, objs), ("b", 40, 60, [(1, 0, 0, 40, 60)])])
    with pytest.raises(DatasetError) as info:
        load("voc", tmp_path, classes=CLASSES)
    message = str(info.value)
    assert "12 bad sample problem(s) (zero-area box: 12)" in message
    assert "object 9" in message and "object 10" not in message
    assert "and 2 more" in message and "bad_samples=drop" in message


def test_all_images_bad_is_an_error_even_when_dropping(tmp_path):
    write_coco(tmp_path)
    for p in (tmp_path / "images" / "train").iterdir():
        p.unlink()
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match="no usable images"):
        load("coco", tmp_path, "drop")


def test_unknown_policy(tmp_path):
    write_coco(tmp_path)
    with pytest.raises(DatasetError, match="bad_samples"):
        load("coco", tmp_path, "ignore")


# --------------------------------------------------------------------------- text encodings


def _with_bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def test_files_saved_with_a_utf8_bom_read_as_without(tmp_path):
    from data_fixtures import write_coco, write_voc, write_yolo

    ann = write_coco(tmp_path / "coco")
    _with_bom(ann)
    assert len(parse_coco(ann, tmp_path / "coco")) == 3
    voc = write_voc(tmp_path / "voc")
    _with_bom(voc / "ImageSets" / "Main" / "train.txt")
    assert len(parse_voc(voc, "train")) == 3
    yolo = write_yolo(tmp_path / "yolo")
    _with_bom(yolo)
    for txt in (yolo.parent / "labels" / "train").glob("*.txt"):
        _with_bom(txt)
    index = parse_yolo(yolo, "train")
    assert index.class_counts() == {"cat": 1, "dog": 2}


def test_a_data_file_that_is_not_utf8_is_named(tmp_path):
    from data_fixtures import write_voc, write_yolo

    yolo = write_yolo(tmp_path / "yolo")
    yolo.write_bytes("names: [caf\u00e9]\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"data.yaml: cannot read the file as UTF-8 text"):
        parse_yolo(yolo, "train")
    voc = write_voc(tmp_path / "voc")
    (voc / "ImageSets" / "Main" / "train.txt").write_bytes(b"a\n\xe9\n")
    with pytest.raises(DatasetError, match=r"train.txt: cannot read the split file as UTF-8"):
        parse_voc(voc, "train")
