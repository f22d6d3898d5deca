"""Benchmark: train a small preset on the embedded data and on BCCD; report mAP and time.

    .venv/bin/python benchmarks/train_small.py [--recipes quickstart bccd] [--set key=value ...]

Each recipe is trained with its own settings (plus the ``--set`` overrides) and a CSV logger; the
script prints a Markdown table and writes ``benchmarks/results/train_small.json``. Not a test:
the numbers go into docs/BENCHMARKS.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from distill.config import load_recipe
from distill.info import model_info
from distill.training import train

REPO = Path(__file__).resolve().parents[1]


def run(recipe_name: str, overrides: list[str]) -> dict:
    """Train one recipe and collect its metrics, size and speed."""
    recipe = load_recipe(
        REPO / "recipes" / f"{recipe_name}.yaml",
        ["logger=csv", f"name=bench-{recipe_name}", "output_dir=runs/bench", *overrides],
    )
    start = time.perf_counter()
    metrics = train(recipe)
    wall = time.perf_counter() - start
    size = model_info(
        recipe.model.name, num_classes=len(metrics["per_class"]), image_size=metrics["image_size"]
    )
    return {
        "recipe": recipe_name,
        "model": recipe.model.name,
        "image_size": metrics["image_size"],
        "epochs": metrics["epochs"],
        "steps": metrics["steps"],
        "map": metrics["map"],
        "map_50": metrics["map_50"],
        "best_map": metrics["best_map"],
        "params": size["params"],
        "macs": size["macs"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": round(wall, 1),
        "per_class": metrics["per_class"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["quickstart", "bccd"])
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    args = parser.parse_args()
    rows = [run(name, args.set) for name in args.recipes]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"\nmachine: {machine}, torch {torch.__version__}")
    print("| recipe | model | input | epochs | params | MACs | mAP | mAP50 | train time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['model']} | {r['image_size']} | {r['epochs']} "
            f"| {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.2f}B | {r['map']:.3f} "
            f"| {r['map_50']:.3f} | {r['train_seconds'] / 60:.1f} min |"
        )
    out = REPO / "benchmarks" / "results" / "train_small.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
