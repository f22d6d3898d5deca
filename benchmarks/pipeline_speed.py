"""Benchmark: training data-loader throughput and COCO evaluation time vs plain pycocotools.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_speed.py [--bccd PATH]
        [--step-seconds S] [--threads 1] [--quick] [--no-profile]

Part 1: images/s of the training loader built as ``distill/training.py`` builds it (embedded
data 128 px, BCCD 256 and 512 px; ``data.num_workers`` 0 and 2) next to what a training step of
``--step-seconds`` consumes (512 px rows). Part 2: ``make_map_metric()`` (torchmetrics) vs
pycocotools ``COCO`` + ``loadRes`` + ``COCOeval`` (effdet's evaluator) on 500 synthetic images,
same mAP asserted. Not a test; writes ``benchmarks/results/pipeline_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import platform
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchmetrics.detection import MeanAveragePrecision

from distill.config import load_recipe
from distill.data import DetectionDataModule
from distill.evaluation import make_map_metric
from distill.training import resolve_image_size

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "pipeline_speed.json"


# ---------------------------------------------------------------------------- data pipeline

def make_data(recipe_name: str, overrides: list[str]) -> DetectionDataModule:
    """The data module of ``recipes/<recipe_name>.yaml``, built and set up as training does."""
    recipe = load_recipe(REPO / "recipes" / f"{recipe_name}.yaml", overrides)
    data = DetectionDataModule(recipe.data, image_size=resolve_image_size(recipe),
                               seed=recipe.seed, synthetic=recipe.data.synthetic)
    data.setup("fit")
    return data


def batches(data: DetectionDataModule):
    """Training batches forever (a new pass over the loader at the end of each epoch)."""
    loader = data.train_dataloader()
    while True:
        yield from loader
        data.train_sampler.epoch += 1


def loader_speed(data: DetectionDataModule, warmup: int, n: int) -> dict[str, Any]:
    """Images/s over ``n`` batches after ``warmup`` batches (worker start-up excluded)."""
    stream = batches(data)
    start = time.perf_counter()
    for _ in range(warmup):
        next(stream)
    first = time.perf_counter() - start
    images, start = 0, time.perf_counter()
    for _ in range(n):
        images += next(stream)[0].shape[0]
    seconds = time.perf_counter() - start
    stream.close()  # ends the loader iterator and its worker processes
    return {"images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1), "warmup_seconds": round(first, 3)}


def profile_loader(data: DetectionDataModule, n: int, top: int = 12) -> dict[str, list]:
    """cProfile ``n`` batches in the main process: top functions by cumulative and own time."""
    stream = batches(data)
    next(stream)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        next(stream)
    profiler.disable()
    stream.close()
    rows = [{"function": f"{Path(file).name}:{line}({name})", "calls": calls,
             "tottime": round(tottime, 3), "cumtime": round(cumtime, 3)}
            for (file, line, name), (_, calls, tottime, cumtime, _)
            in pstats.Stats(profiler).stats.items()]
    return {"batches": n, "by_cumtime": sorted(rows, key=lambda r: -r["cumtime"])[:top],
            "by_tottime": sorted(rows, key=lambda r: -r["tottime"])[:top]}


def data_part(args: argparse.Namespace) -> dict[str, Any]:
    """Loader throughput for every (dataset, size, workers) setting; optional cProfile."""
    warmup, n = (1, 3) if args.quick else (3, args.batches)
    settings: list[tuple[str, str, list[str]]] = [("embedded", "quickstart", [])]
    if args.bccd and Path(args.bccd).is_dir():
        root = [f"data.root={Path(args.bccd).resolve()}"]
        settings += [("bccd", "bccd", root), ("bccd", "bccd", [*root, "model.image_size=512"])]
    rows, profile = [], None
    for dataset, recipe_name, overrides in settings:
        for workers in (0, 2):
            data = make_data(recipe_name, [*overrides, f"data.num_workers={workers}"])
            row = {"dataset": dataset, "image_size": data.image_size,
                   "batch_size": int(data.cfg.batch_size), "num_workers": workers,
                   "train_images": len(data.train_dataset), **loader_speed(data, warmup, n)}
            if args.step_seconds and data.image_size == args.step_size:
                row["need_images_per_s"] = round(row["batch_size"] / args.step_seconds, 1)
                row["pipeline_over_need"] = round(row["images_per_s"] / row["need_images_per_s"], 2)
            rows.append(row)
            print(f"  {dataset:8s} {data.image_size:4d} px  batch {row['batch_size']:2d}  "
                  f"workers {workers}: {row['images_per_s']:7.1f} img/s"
                  + (f"  (need {row['need_images_per_s']} img/s, ratio "
                     f"{row['pipeline_over_need']})" if "need_images_per_s" in row else ""))
            if args.profile and workers == 0 and data.image_size == 512:
                profile = profile_loader(data, 3 if args.quick else 20)
    for key in ("by_cumtime", "by_tottime") if profile else ():
        print(f"  cProfile, {profile['batches']} batches at 512 px, workers 0, {key}:")
        for r in profile[key]:
            print(f"    {r['cumtime']:7.3f} s cum  {r['tottime']:7.3f} s own  {r['calls']:6d}"
                  f"  {r['function']}")
    return {"warmup_batches": warmup, "timed_batches": n, "step_seconds": args.step_seconds,
            "step_size": args.step_size, "rows": rows, "profile_512_workers0": profile}


# ---------------------------------------------------------------------------- evaluation

def synthetic_eval_set(images: int, classes: int, seed: int = 0
                       ) -> tuple[list[dict], list[dict]]:
    """``(preds, targets)`` per image (float32 xyxy boxes in a 640 x 480 image).

    About 5 ground-truth boxes per image (3..7) of 8..300 px; 10 predictions per image: each
    ground truth jittered (label kept with probability 0.9), the rest random false positives.
    """
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(images):
        k = int(rng.integers(3, 8))
        wh = np.exp(rng.uniform(np.log(8), np.log(300), (k, 2)))
        xy = rng.uniform(0, 1, (k, 2)) * (np.array([640, 480]) - wh)
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        labels = rng.integers(0, classes, k)
        jitter = rng.normal(0, 0.08, (k, 4)) * np.concatenate([wh, wh], 1)
        tp = np.clip(gt + jitter, 0, [640, 480, 640, 480])
        tp_labels = np.where(rng.uniform(size=k) < 0.9, labels, rng.integers(0, classes, k))
        m = 10 - k
        fxy = rng.uniform(0, 400, (m, 2))
        fp = np.concatenate([fxy, fxy + rng.uniform(8, 200, (m, 2))], 1)
        boxes = np.concatenate([tp, fp]).astype(np.float32)
        scores = np.concatenate([rng.uniform(0.3, 1.0, k), rng.uniform(0.05, 0.7, m)])
        preds.append({"boxes": torch.from_numpy(boxes),
                      "scores": torch.from_numpy(scores.astype(np.float32)),
                      "labels": torch.from_numpy(np.concatenate([tp_labels,
                                                                 rng.integers(0, classes, m)]))})
        targets.append({"boxes": torch.from_numpy(gt), "labels": torch.from_numpy(labels)})
    return preds, targets


def run_torchmetrics(metric: MeanAveragePrecision, preds: list[dict], targets: list[dict],
                     batch: int = 8) -> float:
    """update() per validation batch of ``batch`` images, then compute(): the mAP."""
    for i in range(0, len(preds), batch):
        metric.update(preds[i:i + batch], targets[i:i + batch])
    return float(metric.compute()["map"])


def xywh(box: list[float]) -> list[float]:
    """xyxy -> COCO xywh."""
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def run_pycocotools(preds: list[dict], targets: list[dict],
                    thresholds: MeanAveragePrecision | None = None) -> float:
    """effdet's path: ground-truth ``COCO``, ``loadRes``, evaluate/accumulate/summarize.

    ``thresholds``: use that metric's IoU / recall thresholds instead of COCO's own.
    """
    images, annotations, categories = [], [], set()
    for image_id, t in enumerate(targets):
        images.append({"id": image_id, "width": 640, "height": 480})
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            b = xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": b,
                                "area": b[2] * b[3], "category_id": label, "iscrowd": 0})
            categories.add(label)
    results = [
        {"image_id": image_id, "bbox": xywh(box), "score": score, "category_id": label}
        for image_id, p in enumerate(preds)
        for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(),
                                     p["labels"].tolist())
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c, "name": str(c)} for c in sorted(categories)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        if thresholds is not None:
            evaluator.params.iouThrs = np.array(thresholds.iou_thresholds, dtype=np.float64)
            evaluator.params.recThrs = np.array(thresholds.rec_thresholds, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def median_time(fn, repeats: int) -> tuple[float, float]:
    """``(median seconds, last result)`` of ``repeats`` calls of ``fn()``."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def eval_part(args: argparse.Namespace) -> dict[str, Any]:
    """Time ours (class_metrics on, as in training; off; COCO thresholds) vs pycocotools.

    torchmetrics' default thresholds are float32 (``torch.linspace``): a recall of exactly
    0.35 falls below its 0.35 threshold (0.3499999940) and mAP moves by ~1e-4 from COCO's.
    Each variant must match pycocotools run with the same thresholds within 1e-4.
    """
    n_images, repeats = (100, 1) if args.quick else (500, 3)
    preds, targets = synthetic_eval_set(n_images, 20)
    detections = sum(len(p["boxes"]) for p in preds)
    coco_thresholds = {"iou_thresholds": np.linspace(0.5, 0.95, 10).tolist(),
                       "rec_thresholds": np.linspace(0.0, 1.0, 101).tolist()}
    box = {"box_format": "xyxy", "iou_type": "bbox"}
    variants = {
        "ours_make_map_metric": make_map_metric,
        "tm_class_metrics_false": lambda: MeanAveragePrecision(**box, class_metrics=False),
        "tm_coco_thresholds": lambda: MeanAveragePrecision(
            **box, class_metrics=True, **coco_thresholds),
        "tm_faster_coco_eval": lambda: MeanAveragePrecision(
            **box, class_metrics=True, backend="faster_coco_eval"),
    }
    timings: dict[str, Any] = {}
    peer_s, peer_map = median_time(lambda: run_pycocotools(preds, targets), repeats)
    timings["pycocotools"] = {"seconds": round(peer_s, 3), "map": round(peer_map, 6)}
    for name, factory in variants.items():
        try:
            seconds, value = median_time(
                lambda f=factory: run_torchmetrics(f(), preds, targets), repeats)
        except (ModuleNotFoundError, ImportError) as err:  # faster-coco-eval not installed
            timings[name] = {"unavailable": str(err).splitlines()[0]}
            continue
        same = run_pycocotools(preds, targets, thresholds=factory())
        timings[name] = {"seconds": round(seconds, 3), "map": round(value, 6),
                         "pycocotools_same_thresholds_map": round(same, 6),
                         "minus_pycocotools_coco_thresholds": round(value - peer_map, 6),
                         "over_pycocotools": round(seconds / peer_s, 2)}
        assert abs(value - same) < 1e-4, f"{name}: mAP {value} vs pycocotools {same}"
    print(f"  {n_images} images, {detections} detections, {sum(len(t['boxes']) for t in targets)}"
          f" ground-truth boxes, 20 classes, median of {repeats}")
    for name, t in timings.items():
        print(f"    {name:24s} " + (f"unavailable: {t['unavailable']}" if "unavailable" in t else
              f"{t['seconds']:7.3f} s  mAP {t['map']:.6f}" + (
              f" (pycocotools, same thresholds {t['pycocotools_same_thresholds_map']:.6f};"
              f" vs COCO's {t['minus_pycocotools_coco_thresholds']:+.6f})"
              f"  x{t['over_pycocotools']} pycocotools time" if "over_pycocotools" in t else "")))
    return {"images": n_images, "detections": detections, "classes": 20, "repeats": repeats,
            "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_bccd = REPO.parent / "shared" / "datasets" / "bccd"
    parser.add_argument("--bccd", default=str(default_bccd) if default_bccd.is_dir() else None)
    parser.add_argument("--step-seconds", type=float, default=None,
                        help="measured training step time at --step-size, same batch size")
    parser.add_argument("--step-size", type=int, default=512, help="input size of that step")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--skip", choices=["data", "eval"], help="leave that part out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}, torch {torch.__version__}")
    result: dict[str, Any] = {"machine": machine, "quick": args.quick}
    if args.skip != "data":
        print("data loader (training split, training transforms):")
        result["data"] = data_part(args)
    if args.skip != "eval":
        print("COCO evaluation:")
        result["eval"] = eval_part(args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
