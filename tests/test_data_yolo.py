"""YOLO data.yaml as Ultralytics and Roboflow write it: path rules, names / nc, split keys, and
the real Aquarium export (a Roboflow download) when it is present."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import yaml
from data_fixtures import CLASSES, IMAGES, write_image, write_yolo

from distill.data import DataConfig, DatasetError, DetectionDataModule
from distill.data.formats.yolo import label_path, parse_yolo, resolve_split_path

REPO = Path(__file__).resolve().parents[1]


def write_split(folder: Path, images=IMAGES) -> None:
    """``folder/images/*.png`` with YOLO labels in ``folder/labels/*.txt`` (Roboflow's layout)."""
    for k, (stem, w, h, objs) in enumerate(images):
        img = folder / "images" / f"{stem}.png"
        write_image(img, w, h, k)
        lbl = label_path(img)
        assert lbl == folder / "labels" / f"{stem}.txt"
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text("".join(
            f"{lab} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}\n"
            for lab, x0, y0, x1, y1 in objs
        ))


def write_roboflow(root: Path, **extra) -> Path:
    """A Roboflow YOLO export: data.yaml beside train/ valid/ test/, paths starting with ``../``."""
    for split in ("train", "valid", "test"):
        write_split(root / split)
    data = {"train": "../train/images", "val": "../valid/images", "test": "../test/images",
            "nc": 2, "names": list(CLASSES), **extra}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def write_data_yaml(file: Path, **data) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(yaml.safe_dump(data))
    return file


def per_class(index) -> dict[str, int]:
    return index.class_counts()


# --------------------------------------------------------------------------- path rules


def test_roboflow_export_resolves_against_the_yaml_folder(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()  # split paths are resolved, as Ultralytics does
    root = tmp_path / "export"
    write_roboflow(root)
    monkeypatch.chdir(tmp_path)  # cwd plays no part
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        idx = parse_yolo(root, split)
        assert [s.image_path for s in idx.samples] == [
            root / folder / "images" / f"{stem}.png" for stem, *_ in IMAGES
        ]
        assert per_class(idx) == {"cat": 1, "dog": 2}
        assert idx.samples[0].labels.tolist() == [0, 1]
    # the YAML file itself as root, given relative to the cwd
    assert len(parse_yolo(Path("export") / "data.yaml", "train")) == 3


def test_dotdot_path_that_exists_wins_over_the_fallback(tmp_path):
    """Ultralytics tries ``path / value`` first; ``value[3:]`` only when that does not exist."""
    tmp_path = tmp_path.resolve()
    root = tmp_path / "export"
    write_roboflow(root)
    write_split(tmp_path / "train", IMAGES[:1])  # <yaml folder>/../train/images exists
    idx = parse_yolo(root, "train")
    assert [s.image_path for s in idx.samples] == [tmp_path / "train" / "images" / "a.png"]
    # val's ../valid/images does not exist one level up: the fallback applies
    assert parse_yolo(root, "val").samples[0].image_path == root / "valid" / "images" / "a.png"


def test_resolve_split_path_tries_both(tmp_path):
    base = tmp_path.resolve() / "ds"
    (base / "x").mkdir(parents=True)
    assert resolve_split_path(base, "x") == (base / "x", [base / "x"])
    assert resolve_split_path(base, "../x") == (base / "x", [tmp_path.resolve() / "x", base / "x"])
    assert resolve_split_path(base, "../nope")[1] == [tmp_path.resolve() / "nope", base / "nope"]
    assert resolve_split_path(base, "nope")[1] == [base / "nope"]  # no ../: no fallback
    assert resolve_split_path(tmp_path / "other", str(base / "x"))[0] == base / "x"


def test_neither_path_found_names_both(tmp_path):
    root = tmp_path / "export"
    yaml_path = write_roboflow(root)
    (root / "valid" / "images").rename(root / "valid" / "pictures")
    with pytest.raises(DatasetError) as info:
        parse_yolo(root, "val")
    message = str(info.value)
    for text in (str(yaml_path), "val:", "'../valid/images'", f"{tmp_path.resolve()}/valid/images "
                 "not found", f"nor {root.resolve()}/valid/images", "expected an image folder"):
        assert text in message, f"{text!r} not in:\n{message}"


def test_path_absent_relative_and_absolute(tmp_path, monkeypatch):
    write_split(tmp_path / "ds" / "train")
    monkeypatch.chdir(tmp_path / "ds")  # a cwd where 'train/images' exists must not matter
    names = list(CLASSES)
    cases = {
        "absent": write_data_yaml(tmp_path / "ds" / "a.yaml", train="train/images", names=names),
        "relative": write_data_yaml(tmp_path / "cfg" / "b.yaml", path="../ds",
                                    train="train/images", names=names),
        "absolute": write_data_yaml(tmp_path / "elsewhere" / "c.yaml", path=str(tmp_path / "ds"),
                                    train="train/images", names=names),
    }
    for case, yaml_path in cases.items():
        idx = parse_yolo(yaml_path, "train")
        assert idx.samples[0].image_path.resolve() == (
            tmp_path / "ds" / "train" / "images" / "a.png"
        ).resolve(), case
        assert per_class(idx) == {"cat": 1, "dog": 2}, case
    # relative path that is wrong: the error says what it was relative to
    bad = write_data_yaml(tmp_path / "cfg" / "d.yaml", path="ds", train="train/images",
                          names=names)
    with pytest.raises(DatasetError, match=r"d\.yaml: train: 'train/images': .*cfg/ds/train/images"
                                           r" not found"):
        parse_yolo(bad, "train")
    wrong_type = write_data_yaml(tmp_path / "cfg" / "e.yaml", path=3, train="x", names=names)
    with pytest.raises(DatasetError, match=r"e\.yaml: path = 3; expected the dataset root"):
        parse_yolo(wrong_type, "train")


def test_split_as_list_and_txt_file(tmp_path):
    root = tmp_path / "export"
    write_roboflow(root)
    (root / "extra.txt").write_text("valid/images/a.png\n./test/images/b.png\n")
    write_data_yaml(root / "data.yaml", train=["../train/images", "../valid/images"],
                    val="extra.txt", names=list(CLASSES))
    assert len(parse_yolo(root, "train")) == 6
    assert [s.image_path.name for s in parse_yolo(root, "val").samples] == ["a.png", "b.png"]
    write_data_yaml(root / "data.yaml", train=["../train/images", 5], names=list(CLASSES))
    with pytest.raises(DatasetError, match=r"data\.yaml: train = .*expected a path or list"):
        parse_yolo(root, "train")


def test_labels_beside_images_last_images_folder(tmp_path):
    """``.../images/x.jpg`` -> ``.../labels/x.txt``, the last ``images`` component only."""
    assert label_path(Path("/d/images/train/images/x.jpg")) == Path("/d/images/train/labels/x.txt")
    assert label_path(Path("/d/images/train/x.jpeg")) == Path("/d/labels/train/x.txt")
    write_split(tmp_path / "images" / "sub")  # tmp/images/sub/images/*.png, .../sub/labels/*.txt
    yaml_path = write_data_yaml(tmp_path / "data.yaml", train="images/sub/images",
                                names=list(CLASSES))
    assert per_class(parse_yolo(yaml_path, "train")) == {"cat": 1, "dog": 2}


# --------------------------------------------------------------------------- names, nc, keys


@pytest.mark.parametrize("names", [["cat", "dog"], {0: "cat", 1: "dog"}, {1: "dog", 0: "cat"},
                                   {"0": "cat", "1": "dog"}])
def test_names_list_or_dict(tmp_path, names):
    write_yolo(tmp_path, names=names)
    idx = parse_yolo(tmp_path, "train")
    assert idx.class_names == CLASSES
    assert per_class(idx) == {"cat": 1, "dog": 2}


def test_names_dict_with_a_gap(tmp_path):
    write_yolo(tmp_path, names={0: "cat", 2: "dog"})
    with pytest.raises(DatasetError, match=r"data\.yaml: 'names' keys are \[0, 2\]; expected 0\."):
        parse_yolo(tmp_path, "train")


@pytest.mark.parametrize("nc", [2, None])
def test_nc_matching_or_absent(tmp_path, nc):
    root = tmp_path / "export"
    write_roboflow(root, nc=nc)
    assert parse_yolo(root, "train").class_names == CLASSES


@pytest.mark.parametrize("nc", [3, 1, "2", True])
def test_nc_mismatch_is_an_error(tmp_path, nc):
    root = tmp_path / "export"
    write_roboflow(root, nc=nc)
    with pytest.raises(DatasetError) as info:
        parse_yolo(root, "train")
    message = str(info.value)
    for text in ("data.yaml", f"nc = {nc!r}", "'names' has 2 entries", "expected nc: 2"):
        assert text in message, f"{text!r} not in:\n{message}"


def test_test_key_is_a_split_name_and_unknown_key_lists_keys(tmp_path):
    root = tmp_path / "export"
    write_roboflow(root)
    (root / "test" / "labels" / "b.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    cfg = DataConfig(format="yolo", root=str(root / "data.yaml"), train="train", val="test",
                     num_workers=0)
    dm = DetectionDataModule(cfg, image_size=128)
    dm.setup("fit")
    assert dm.summary()["val"]["per_class"] == {"cat": 2, "dog": 1}
    assert dm.summary()["train"]["per_class"] == {"cat": 1, "dog": 2}
    with pytest.raises(DatasetError) as info:
        parse_yolo(root, "minival")
    message = str(info.value)
    for text in ("data.yaml", "'minival'", "'train'", "'val'", "'test'", "data.train / data.val"):
        assert text in message, f"{text!r} not in:\n{message}"


# --------------------------------------------------------------------------- real export


def aquarium_root() -> Path:
    env = os.environ.get("DISTILL_AQUARIUM_ROOT")
    return Path(env) if env else REPO.parent / "shared" / "datasets" / "aquarium"


needs_aquarium = pytest.mark.skipif(
    not (aquarium_root() / "data.yaml").is_file(),
    reason="Aquarium not found (set DISTILL_AQUARIUM_ROOT or place it at "
           "../shared/datasets/aquarium)",
)


def count_label_lines(folder: Path, names: list[str]) -> dict[str, int]:
    counts = Counter(
        int(line.split()[0])
        for path in folder.glob("*.txt")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.split()
    )
    return {names[k]: counts[k] for k in range(len(names))}  # every class, zero if unseen


@needs_aquarium
def test_aquarium_roboflow_export_counts_match_the_label_files():
    """``distill data recipes/aquarium.yaml``'s path: recipe -> prepare_data -> summary."""
    from distill.config import load_recipe
    from distill.training import prepare_data

    root = aquarium_root()
    recipe = load_recipe(REPO / "recipes" / "aquarium.yaml", [f"data.root={root}"])
    summary = prepare_data(recipe).summary()
    names = ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]
    assert summary["class_names"] == names
    for split, folder in (("train", "train"), ("val", "valid")):
        labels = root / folder / "labels"
        assert summary[split]["images"] == len(list((root / folder / "images").iterdir()))
        assert summary[split]["per_class"] == count_label_lines(labels, names), split
        assert summary[split]["dropped_objects"] == 0 and summary[split]["dropped_images"] == 0
    assert summary["train"]["objects"] == sum(count_label_lines(root / "train/labels",
                                                                 names).values())


# --------------------------------------------------------------------------- labels found or not


def test_ultralytics_layout_with_an_images_link_finds_the_labels_beside_it(tmp_path):
    """COCO128 as Ultralytics ships it: ``path: .``, ``train: images/train2017``, ``images`` a
    link to ``../images``, ``labels/train2017`` in the dataset folder: labels come from the
    path as written, not from where the link points."""
    write_split(tmp_path / "store" / "x", IMAGES)
    shared = tmp_path / "images"
    (tmp_path / "store" / "x" / "images").rename(tmp_path / "store" / "train2017")
    shared.mkdir()
    (tmp_path / "store" / "train2017").rename(shared / "train2017")
    ds = tmp_path / "coco128"
    (ds / "labels").mkdir(parents=True)
    (tmp_path / "store" / "x" / "labels").rename(ds / "labels" / "train2017")
    os.symlink("../images", ds / "images")
    data = write_data_yaml(ds / "data.yaml", path=".", train="images/train2017",
                           val="images/train2017", names=list(CLASSES))
    idx = parse_yolo(data, "train")
    assert idx.samples[0].image_path == ds / "images" / "train2017" / "a.png"
    assert per_class(idx) == {"cat": 1, "dog": 2}


def test_a_split_whose_label_files_are_mostly_missing_stops_naming_where_it_looked(tmp_path):
    root = tmp_path / "export"
    yaml_path = write_roboflow(root)
    for txt in (root / "train" / "labels").glob("*.txt"):
        txt.unlink()
    with pytest.raises(DatasetError, match=r"split 'train': 3 of 3 images have no label file "
                                           r"\(e\.g\. .*train/labels/a\.txt does not exist\)"):
        parse_yolo(yaml_path, "train")
    # one background image without a label file among three is allowed and counted
    write_split(root / "train", IMAGES[:2])
    assert len(parse_yolo(yaml_path, "train")) == 3


def test_a_split_of_empty_label_files_stops_before_training(tmp_path):
    root = tmp_path / "export"
    write_roboflow(root)
    for txt in (root / "valid" / "labels").glob("*.txt"):
        txt.write_text("")
    data = DetectionDataModule(DataConfig(format="yolo", root=str(root), train="train",
                                          val="val", num_workers=0), image_size=128)
    with pytest.raises(DatasetError, match=r"val split 'val' has 3 images and not one object"):
        data.setup()


@needs_aquarium
def test_aquarium_in_the_ultralytics_layout_with_a_linked_images_folder(tmp_path, capsys):
    """The COCO128 layout built from the real export: ``images`` a link to ``../images``, the
    labels beside it; ``distill data`` counts every object of the label files."""
    from distill.cli import main
    from distill.config import load_recipe
    from distill.training import prepare_data

    root = aquarium_root()
    names = ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]
    (tmp_path / "images").mkdir()
    os.symlink(root / "valid" / "images", tmp_path / "images" / "val2017")
    ds = tmp_path / "aquarium128"
    (ds / "labels").mkdir(parents=True)
    os.symlink(root / "valid" / "labels", ds / "labels" / "val2017")
    os.symlink("../images", ds / "images")
    write_data_yaml(ds / "data.yaml", path=".", train="images/val2017", val="images/val2017",
                    names=names)
    overrides = [f"data.root={ds}", "data.train=train", "data.val=val"]
    assert main(["data", "recipes/aquarium.yaml", *overrides]) == 0
    printed = capsys.readouterr().out
    summary = prepare_data(load_recipe(REPO / "recipes" / "aquarium.yaml", overrides)).summary()
    expected = count_label_lines(root / "valid" / "labels", names)
    assert summary["train"]["per_class"] == expected and sum(expected.values()) > 0
    assert all(str(count) in printed for count in expected.values() if count)
