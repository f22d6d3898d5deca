"""Benchmark: slimming the head where its FLOPs are (light_levels) against shrinking the input.

    .venv/bin/python benchmarks/slimming.py [--recipe recipes/bccd.yaml] [--targets 1.15 1.8]
        [--set key=value ...] [--runs runs/] [--dry-run]

Light-Weight RetinaNet (Li & Ren 2019) replaces only the head convolutions of the finest
pyramid level by lightweight blocks and reports a better mAP-FLOPs line than input scaling
(+0.1 mAP at 1.15x fewer FLOPs, +0.3 at 1.8x). This benchmark draws both lines for the recipe's
student (default ``recipes/bccd.yaml``, data at ``$DISTILL_BCCD_ROOT``):

- the reference: the unmodified student at the recipe's input size;
- light points: of the ``model.options.light_levels`` / ``light_block`` / ``light_depth``
  combinations (P3, P3-P4, P3-P5, every level; grouped and, on dense heads, separable; the
  whole tower or its first 1-3 convs), the one whose FLOPs
  ratio (reference / point, ``distill info``'s count) is nearest each ``--targets`` ratio;
- input points: of the input sizes in steps of 8 px down to half the reference size, the one
  nearest each target.

The achieved ratios are printed, with a warning where a line cannot get near a target (the head
of an EfficientDet student holds a few % of its FLOPs, ``distill info MODEL --breakdown``; a
RetinaNet-style student, ``--set model.name=retinanet model.backbone=resnet18``, has the
paper's distribution). Every point trains with the recipe's seed and schedule; ``distill
train`` takes multiples of 128 px only, so sizes between are trained here with the same calls
at that size (the networks and anchors halve every map with ceil, any size works).

Resumable: each point lives in ``<runs>/slimming/<dataset>/<point>`` and trains with
``resume=true``, so a killed benchmark continues and finished points are read, not trained
again; a point finished in the results file (same recipe, overrides, seed and epochs) whose run
folder is gone, as in a new checkout, is read from there. After each point
``benchmarks/results/slimming_<dataset>.json`` is rewritten and, when matplotlib is installed,
``slimming_<dataset>.png`` drawn (mAP against GFLOPs, two lines).
``--dry-run`` prints the points, their FLOPs and ratios, and trains nothing. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from distill.config import Recipe, load_recipe, recipe_to_dict, recipe_to_yaml
from distill.data import DetectionDataModule
from distill.errors import RecipeError
from distill.info import model_info
from distill.io import write_text_atomic
from distill.lightning import DetectionModule
from distill.lightning.detection import model_overrides
from distill.stages import derive
from distill.training import finished_metrics, fit, prepare_data, train

REPO = Path(__file__).resolve().parents[1]
LEVEL_SETS = ([3], [3, 4], [3, 4, 5], [3, 4, 5, 6, 7])
LIGHT_DEPTHS = (None, 1, 2, 3)  # light convs per light level (None: the whole tower)
SIZE_STEP = 8
FAR = 1.1  # a pick whose ratio is off its target by more than this factor gets a warning


def point_flops(recipe: Recipe, num_classes: int, size: int, options: dict) -> int | None:
    """FLOPs of the recipe's model at ``size`` with extra ``options`` (None: not buildable)."""
    model = OmegaConf.to_container(OmegaConf.structured(recipe.model))
    overrides = {**model_overrides(model), **options}
    try:
        return 2 * model_info(model["name"], num_classes, size, **overrides)["macs"]
    except RecipeError:
        return None  # e.g. separable light blocks on EfficientDet's separable head


def candidates(recipe: Recipe, num_classes: int, base_size: int) -> list[dict[str, Any]]:
    """The reference, every light-levels combination and every smaller input size."""
    points = [{"line": "reference", "label": f"reference-{base_size}", "image_size": base_size,
               "options": {}}]
    for levels in LEVEL_SETS:
        for block in ("grouped", "separable"):
            for depth in LIGHT_DEPTHS:
                name = "p" + "".join(str(lvl) for lvl in levels) + (f"-d{depth}" if depth else "")
                options = {"light_levels": levels, "light_block": block,
                           **({"light_depth": depth} if depth else {})}
                points.append({"line": "light", "label": f"light-{name}-{block}",
                               "image_size": base_size, "options": options})
    for size in range(base_size - SIZE_STEP, base_size // 2 - 1, -SIZE_STEP):
        points.append({"line": "input", "label": f"input-{size}", "image_size": size,
                       "options": {}})
    for point in points:
        point["flops"] = point_flops(recipe, num_classes, point["image_size"], point["options"])
    base = points[0]["flops"]
    kept = [p for p in points if p["flops"] is not None]
    for point in kept:
        point["ratio"] = round(base / point["flops"], 3)
    return kept


def pick(points: list[dict[str, Any]], targets: list[float]) -> list[dict[str, Any]]:
    """The reference and, per line, the candidates whose ratios are nearest (log) the targets
    (a candidate nearest two targets is trained once; ``targets`` lists what it stands for)."""
    chosen = {points[0]["label"]: points[0]}
    for line in ("light", "input"):
        pool = [p for p in points if p["line"] == line]
        for target in targets:
            best = min(pool, key=lambda p: abs(math.log(p["ratio"] / target)))
            chosen.setdefault(best["label"], {**best, "targets": []})["targets"].append(target)
            if max(best["ratio"] / target, target / best["ratio"]) > FAR:
                print(f"WARNING: the {line} line gets no nearer to {target}x fewer FLOPs than "
                      f"{best['ratio']}x ({best['label']}); `distill info MODEL --breakdown` "
                      "shows where the model's FLOPs are")
    return list(chosen.values())


def train_at_size(recipe: Recipe, run_dir: Path) -> dict[str, Any]:
    """``distill.training.train`` of ``recipe`` into ``run_dir``; an input size that is not a
    multiple of 128 (which ``train`` refuses) gets the same steps with the data at that size."""
    size = recipe.model.image_size
    if size % 128 == 0:
        return train(recipe, run_dir=run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = finished_metrics(recipe, run_dir)
    if done is not None:
        return done
    pl.seed_everything(recipe.seed, workers=True)
    data = DetectionDataModule(recipe.data, image_size=size, seed=recipe.seed,
                               synthetic=recipe.data.synthetic)
    data.setup("fit")
    write_text_atomic(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    module = DetectionModule(recipe_to_dict(recipe), data.class_names)
    return fit(recipe, module, data, run_dir)


def table(points: list[dict[str, Any]]) -> str:
    """The points as a Markdown table."""
    lines = ["| point | line | input | options | GFLOPs | fewer FLOPs | for | mAP | mAP50 |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for p in points:
        opts = ", ".join(f"{k}={v}" for k, v in p["options"].items())
        got = (f"{p['map']:.4f} | {p['map_50']:.4f}" if "map" in p else " | ")
        target = ", ".join(f"{t}x" for t in p.get("targets", []))
        lines.append(f"| {p['label']} | {p['line']} | {p['image_size']} | {opts} | "
                     f"{p['flops'] / 1e9:.3f} | {p['ratio']:.3f}x | {target} | {got} |")
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path, title: str) -> None:
    """mAP against GFLOPs, one line per method (both start at the reference)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib to draw it)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ref = [p for p in points if p["line"] == "reference" and "map" in p]
    for line, label in (("light", "light head levels"), ("input", "input scaling")):
        pts = sorted(ref + [p for p in points if p["line"] == line and "map" in p],
                     key=lambda p: p["flops"])
        if pts:
            ax.plot([p["flops"] / 1e9 for p in pts], [p["map"] for p in pts], "o-", label=label)
    ax.set_xlabel("GFLOPs per image")
    ax.set_ylabel("mAP")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"drawn: {path}")


def committed_points(out: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished points of an earlier run with the same ``settings`` in the results file ``out``
    (by label), so that a checkout without the run folders does not train them again."""
    if not out.is_file():
        return {}
    earlier = json.loads(out.read_text())
    if any(earlier.get(key) != value for key, value in settings.items()):
        return {}
    return {p["label"]: p for p in earlier.get("points", []) if "map" in p}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "bccd.yaml")
    parser.add_argument("--targets", nargs="+", type=float, default=[1.15, 1.8],
                        help="FLOPs reduction ratios to compare at (reference / point)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    parser.add_argument("--runs", type=Path, default=REPO / "runs",
                        help="where the runs live (keep it across sessions to resume)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the points, their FLOPs and ratios; train nothing")
    args = parser.parse_args()

    recipe = load_recipe(args.recipe, ["logger=csv", "trainer.progress_bar=false", "resume=true",
                                       f"output_dir={args.runs}", *args.set])
    data = None
    if recipe.data.classes:
        num_classes = len(recipe.data.classes)
    else:  # read the annotations for the class count (cheap; no training)
        data = prepare_data(recipe)
        num_classes = data.num_classes
    with torch.device("meta"):
        from distill.models import build_model

        base_size = recipe.model.image_size or build_model(recipe.model.name, 1).image_size
    points = pick(candidates(recipe, num_classes, base_size), args.targets)
    print(f"{recipe.model.name} on {recipe.name} ({num_classes} classes), reference "
          f"{base_size} px, {points[0]['flops'] / 1e9:.3f} GFLOPs")
    print(table(points), flush=True)
    if args.dry_run:
        return
    out = REPO / "benchmarks" / "results" / f"slimming_{recipe.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    root = args.runs / "slimming" / recipe.name
    settings = {"recipe": str(args.recipe), "overrides": args.set, "model": recipe.model.name,
                "num_classes": num_classes, "targets": args.targets, "seed": recipe.seed,
                "epochs": recipe.trainer.epochs}
    done = committed_points(out, settings)
    start = time.perf_counter()
    for point in points:
        if point["label"] in done and not (root / point["label"]).is_dir():
            earlier = done[point["label"]]
            point.update({k: earlier[k] for k in ("map", "map_50", "run_dir")})
            print(f"{point['label']}: read from {out} (mAP {point['map']:.4f})")
            continue
        changes = {"name": f"slimming-{recipe.name}-{point['label']}",
                   "model": {"image_size": point["image_size"],
                             "options": {**recipe.model.options, **point["options"]}}}
        metrics = train_at_size(derive(recipe, changes), root / point["label"])
        point.update(map=float(metrics["map"]), map_50=float(metrics["map_50"]),
                     run_dir=str(root / point["label"]))
        out.write_text(json.dumps({
            **settings, "points": points,
            "wall_seconds": round(time.perf_counter() - start),
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__},
        }, indent=2) + "\n")
        print(table(points), flush=True)
        plot(points, out.with_suffix(".png"), f"{recipe.model.name} on {recipe.name}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
