"""``distill init``: a recipe to distil on your own dataset, written from the installed package
(no file of this repository needed). One template per dataset format; the teacher, the student,
the terms and the schedule are the ones measured best on this project's three datasets
(docs/BENCHMARKS.md); every value can be changed in the written file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from distill.errors import RecipeError

# per format: the data section's split keys and a comment saying what they point at
FORMAT_DATA: dict[str, dict[str, str]] = {
    "coco": {"train": "annotations/instances_train.json",
             "val": "annotations/instances_val.json", "image_dir": "images",
             "note": "COCO JSON: train / val are annotation files under root; image_dir the "
                     "folder their file_name entries are relative to"},
    "voc": {"train": "train", "val": "val",
            "note": "Pascal VOC: root holds Annotations/, JPEGImages/ and ImageSets/Main/"
                    "<split>.txt; without the split lists, val_fraction of the XML files is "
                    "held out"},
    "yolo": {"train": "train", "val": "val",
             "note": "YOLO txt (Roboflow and Ultralytics exports): root is data.yaml or its "
                     "folder; train / val name its split keys; labels are found beside images/ "
                     "as YOLO finds them"},
}

TEMPLATE = """\
# {name}: distil a small detector on your dataset ({fmt}). Written by `distill init`; run it with
#   distill check {out}     (pre-flight: data, models, terms, in seconds)
#   distill run {out}       (teacher, baseline student, distilled student, report)
{note}
# Relative paths here are read beside this file.
name: {name}
seed: 0
output_dir: runs
logger: wandb              # offline by default: `wandb sync` uploads later
wandb_mode: offline
data:
  format: {fmt}
  root: {root}
{splits}  bad_samples: drop        # bad files or boxes are named, then dropped
  batch_size: 8
  num_workers: 2
model:                     # the student: DAMO-YOLO (anchor-free, GFL + DFL, AlignOTA) at 256 px
  name: {student}
  image_size: {size}
  bn_momentum: 0.1
teacher:                   # trained first by `distill run` (twice the student's epochs), cached
  model:
    name: {teacher}
    image_size: {size}
    bn_momentum: 0.1
distill:
  terms:
{terms}
optim:
  name: adamw
  lr: 0.003
  weight_decay: 0.0001
  warmup_epochs: 1.0
  ema_decay: 0.999
  freeze_bn_at: 0.5
trainer:
  epochs: 30
  grad_clip: 10.0
"""

STUDENT, TEACHER, IMAGE_SIZE = "damo_yolo_tinynet", "damo_yolo_nm", 256
# prediction KD at 16x the detection loss, flat: the best term on the DAMO-YOLO pair (3 paired
# seeds on the embedded data and BCCD; docs/BENCHMARKS.md, "DAMO-YOLO students")
TERMS = ["{kind: prediction, weight: {schedule: auto, target: 16.0, start: 1.0, end: 1.0}}"]


def render(fmt: str, root: str, name: str, out: str) -> str:
    """The recipe text for a dataset of format ``fmt`` at ``root``."""
    if fmt not in FORMAT_DATA:
        raise RecipeError(f"distill init: unknown format {fmt!r}; expected one of "
                          f"{', '.join(FORMAT_DATA)}")
    data = FORMAT_DATA[fmt]
    splits = "".join(f"  {key}: {value}\n" for key, value in data.items() if key != "note")
    note = "\n".join(textwrap.wrap(data["note"] + ".", 94, initial_indent="# ",
                                    subsequent_indent="# "))
    return TEMPLATE.format(name=name, fmt=fmt, root=root, note=note, splits=splits,
                           student=STUDENT, teacher=TEACHER, size=IMAGE_SIZE, out=out,
                           terms="\n".join(f"    - {term}" for term in TERMS))


def write_recipe(fmt: str, root: str, out: str | Path, name: str | None = None) -> Path:
    """Write the recipe for ``root`` to ``out`` (never over an existing file)."""
    out = Path(out)
    if out.exists():
        raise RecipeError(f"distill init: {out} exists; choose another --out or remove it")
    name = name or out.stem
    root_text = os.path.abspath(root)  # absolute, '..' folded: the recipe works from anywhere
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(fmt, root_text, name, str(out)))
    return out
