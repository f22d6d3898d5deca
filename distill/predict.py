"""``distill predict``: a checkpoint on an image, a folder or a glob -> drawn copies + COCO JSON.

The output folder receives

- ``detections.json``: COCO results (a list of ``{"image_id", "category_id", "bbox": [x, y, w,
  h], "score"}``, boxes in original image pixels), loadable by pycocotools' ``COCO.loadRes``;
- ``images.json``: ``{"images": [{"id", "file_name", "width", "height"}], "categories": [{"id",
  "name"}], ...}``, the file name -> ``image_id`` map (file names relative to the images'
  common folder) and the class names in the checkpoint's label order;
- ``images/``: a copy of each image with the boxes scoring at least ``draw_threshold`` drawn.

Image ids run 1..N in file order and ``category_id`` is the label index + 1, or, given ``coco``
(a COCO annotation file holding these images), that file's ids: images by file name and
categories in the order distill's COCO reader gives labels (sorted by id).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distill.checkpoints import check_class_names
from distill.errors import RecipeError
from distill.images import draw_detections, find_images, read_image, save_image
from distill.inference import Detections, load_detector
from distill.io import write_json_atomic


def _common_root(files: list[Path]) -> Path:
    """The deepest folder holding every file."""
    parents = [str(p.resolve().parent) for p in files]
    return Path(os.path.commonpath(parents))


def coco_ids(path: str | os.PathLike, files: list[Path], root: Path, class_names: list[str]
             ) -> tuple[list[int], list[int]]:
    """``(image ids per file, category id per label)`` from the COCO annotation file ``path``:
    images matched by their ``file_name`` (relative to ``root``, or the base name); its
    categories (by id) must be the checkpoint's ``class_names``, in that order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        images, categories = data["images"], data["categories"]
        by_name: dict[str, int] = {}
        for entry in images:
            by_name[str(entry["file_name"])] = int(entry["id"])
            by_name.setdefault(Path(str(entry["file_name"])).name, int(entry["id"]))
        by_id = sorted((int(c["id"]), str(c["name"])) for c in categories)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RecipeError(f"--coco {path}: expected a COCO annotation JSON with 'images' "
                          f"(id, file_name) and 'categories' (id, name): {err}") from err
    placeholders = class_names == [f"class_{i}" for i in range(len(class_names))]
    check_class_names(None if placeholders else class_names, [name for _, name in by_id],
                      "the checkpoint", f"--coco {path} (its categories by id)")
    if len(by_id) != len(class_names):
        raise RecipeError(f"--coco {path}: {len(by_id)} categories, but the checkpoint has "
                          f"{len(class_names)} classes")
    category_ids = [cid for cid, _ in by_id]
    ids = []
    for file in files:
        rel = file.resolve().relative_to(root).as_posix()
        image_id = by_name.get(rel, by_name.get(file.name))
        if image_id is None:
            raise RecipeError(f"--coco {path}: no image with file_name '{rel}' or "
                              f"'{file.name}'")
        ids.append(image_id)
    return ids, category_ids


def caption(det: Detections, index: int) -> str:
    """``"<class name> <score>"`` of one detection."""
    return f"{det.names[index]} {float(det.scores[index]):.2f}"


def run_predict(checkpoint: str | os.PathLike, source: str | os.PathLike,
                output: str | os.PathLike, score_threshold: float = 0.05,
                draw_threshold: float = 0.3, device: str = "auto", batch_size: int = 8,
                max_detections: int = 100, draw: bool = True, progress: bool = True,
                coco: str | os.PathLike | None = None) -> dict[str, Any]:
    """Predict on every image of ``source`` and write the files listed in the module docstring
    to ``output``; returns a summary (counts and file paths)."""
    from tqdm.auto import tqdm

    if int(batch_size) < 1:
        raise RecipeError(f"--batch-size {batch_size}: expected a positive integer")
    if not 0.0 <= float(score_threshold) < 1.0 or not 0.0 <= float(draw_threshold) <= 1.0:
        raise RecipeError(f"--score-threshold {score_threshold} / --draw-threshold "
                          f"{draw_threshold}: expected values in [0, 1)")
    files = find_images(source)
    predictor = load_detector(checkpoint, device=device)
    out = Path(output)
    root = _common_root(files)
    names = [f.resolve().relative_to(root).as_posix() for f in files]
    if coco is not None:
        image_ids, category_ids = coco_ids(coco, files, root, predictor.class_names)
    else:
        image_ids, category_ids = list(range(1, len(files) + 1)), None
    drawn_dir = out / "images"
    sources = {f.resolve() for f in files}
    if draw and any((drawn_dir / n).resolve() in sources for n in names):
        raise RecipeError(f"--output {out}: drawing into {drawn_dir} would overwrite the "
                          "source images; choose another output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RecipeError(f"--output {out}: cannot create the folder: {err}") from err

    results: list[dict] = []
    images: list[dict] = []
    with tqdm(total=len(files), unit="image", desc="predict", disable=not progress) as bar:
        for start in range(0, len(files), int(batch_size)):
            chunk = range(start, min(start + int(batch_size), len(files)))
            tensors = [read_image(files[i]) for i in chunk]
            dets = predictor.predict_tensors(tensors, score_threshold, max_detections)
            for i, image, det in zip(chunk, tensors, dets):
                results += det.to_coco(image_ids[i], category_ids)
                h, w = det.image_size
                images.append({"id": image_ids[i], "file_name": names[i], "width": w,
                               "height": h})
                if draw:
                    shown = (det.scores >= draw_threshold).nonzero().flatten().tolist()
                    picture = draw_detections(image, det.boxes[shown],
                                              [int(det.labels[j]) for j in shown],
                                              [caption(det, j) for j in shown])
                    save_image(picture, drawn_dir / names[i])
            bar.update(len(chunk))

    ids = category_ids or list(range(1, len(predictor.class_names) + 1))
    meta = {"images": images,
            "categories": [{"id": c, "name": n} for c, n in zip(ids, predictor.class_names)],
            "checkpoint": str(checkpoint), "source": str(source),
            "score_threshold": float(score_threshold), "max_detections": int(max_detections),
            "image_size": predictor.image_size}
    files_out = {"detections": str(write_json_atomic(out / "detections.json", results)),
                 "images": str(write_json_atomic(out / "images.json", meta))}
    if draw:
        files_out["drawn"] = str(drawn_dir)
    return {"images": len(files), "detections": len(results), "files": files_out}
