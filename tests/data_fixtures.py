"""Tiny datasets written in COCO, VOC and YOLO form, shared by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from distill.data.formats.yolo import label_path

CLASSES = ["cat", "dog"]
COCO_IDS = {"cat": 3, "dog": 7}  # written in the JSON as [dog(7), cat(3)]: labels follow the ids
# stem, width, height, objects (label, x0, y0, x1, y1)
IMAGES = [
    ("a", 64, 48, [(0, 4, 6, 30, 40), (1, 32, 10, 60, 44)]),
    ("b", 40, 60, [(1, 0, 0, 40, 60)]),  # touches every border
    ("c", 50, 50, []),  # background image
]


def write_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def coco_dict(images=IMAGES) -> dict:
    out = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    for i, (stem, w, h, objs) in enumerate(images):
        out["images"].append(
            {"id": i, "file_name": f"images/train/{stem}.png", "width": w, "height": h}
        )
        for lab, x0, y0, x1, y1 in objs:
            out["annotations"].append({
                "id": len(out["annotations"]) + 1, "image_id": i, "iscrowd": 0,
                "category_id": COCO_IDS[CLASSES[lab]], "bbox": [x0, y0, x1 - x0, y1 - y0],
            })
    # a crowd region: skipped
    out["annotations"].append(
        {"id": 99, "image_id": 0, "iscrowd": 1, "category_id": 3, "bbox": [0, 0, 10, 10]}
    )
    return out


def write_coco(root: Path, data: dict | None = None, images=IMAGES) -> Path:
    for k, (stem, w, h, _) in enumerate(images):
        write_image(root / "images" / "train" / f"{stem}.png", w, h, k)
    ann = root / "annotations" / "train.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data if data is not None else coco_dict(images)))
    return ann


def voc_xml(stem: str, w: int, h: int, objs, names=CLASSES) -> str:
    parts = [f"<annotation><filename>{stem}.png</filename>",
             f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for lab, x0, y0, x1, y1 in objs:
        name = names[lab] if isinstance(lab, int) else lab
        parts.append(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def write_voc(root: Path, images=IMAGES, split: str = "train") -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for k, (stem, w, h, objs) in enumerate(images):
        write_image(root / "JPEGImages" / f"{stem}.png", w, h, k)
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, w, h, objs))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
        "\n".join(stem for stem, *_ in images) + "\n"
    )
    return root


def write_yolo(root: Path, images=IMAGES, names=None) -> Path:
    for k, (stem, w, h, objs) in enumerate(images):
        img = root / "images" / "train" / f"{stem}.png"
        write_image(img, w, h, k)
        lines = [
            f"{lab} {(x0 + x1) / 2 / w:.7f} {(y0 + y1) / 2 / h:.7f} "
            f"{(x1 - x0) / w:.7f} {(y1 - y0) / h:.7f}"
            for lab, x0, y0, x1, y1 in objs
        ]
        lbl = label_path(img)
        lbl.parent.mkdir(parents=True, exist_ok=True)
        if lines:  # "c" gets no label file at all: an image without objects
            lbl.write_text("\n".join(lines) + "\n")
    names = names if names is not None else {0: "cat", 1: "dog"}
    (root / "data.yaml").write_text(yaml.safe_dump(
        {"path": ".", "train": "images/train", "val": "images/train", "names": names}
    ))
    return root / "data.yaml"


def embedded_slice(tmp_path: Path, name: str) -> list[str]:
    """Recipe overrides for a small slice of the embedded data (32 training images, 8 kept for
    validation but validated on the training images), CSV logs, no augmentation, in ``tmp_path``."""
    return [
        f"data.root={tmp_path / 'data'}",
        f"output_dir={tmp_path / 'runs'}",
        f"name={name}",
        "logger=csv",
        "trainer.progress_bar=false",
        "data.synthetic.num_train=32",
        "data.synthetic.num_val=8",
        "data.synthetic.min_size=24",
        "data.synthetic.max_size=64",
        "data.synthetic.max_objects=3",
        "data.synthetic.clutter=2",
        "data.val=annotations/train.json",
        "data.augment.enabled=false",
        "data.num_workers=0",
    ]
