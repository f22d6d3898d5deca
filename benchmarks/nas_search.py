"""Benchmark: MAE-NAS search with the entropy score, 2,000 candidates under a MAC budget.

    .venv/bin/python benchmarks/nas_search.py [--candidates 2000] [--macs 400000000]
        [--threads N] [--set key=value ...]

Runs `distill search` on the default search space (entropy score at its recipe defaults: noise
images of 160 px, batch 2, 2 repeats) with a multiply-add budget at 320 px input (default
0.4 GMACs: a light mobile backbone), prints a Markdown line and writes
``benchmarks/results/nas_search.json``. The issue's target: >= 2,000 candidates in under
10 minutes on a 2-core CPU. Not a test: the numbers go into docs/BENCHMARKS.md with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from distill.config import load_recipe
from distill.search.zero_shot import run_search, search_settings

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "nas_search.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--macs", type=int, default=400_000_000, help="budget at --image-size")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="more key=value recipe overrides")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--output", default=str(RESULT), help="results JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(None, [
        "name=bench-nas", "output_dir=runs/bench", "search.score=entropy",
        f"search.candidates={args.candidates}", f"search.population={args.population}",
        f"search.budget.macs={args.macs}", f"search.image_size={args.image_size}",
        f"search.seed={args.seed}", *args.set,
    ])
    cfg, out_dir = search_settings(recipe)
    start = time.perf_counter()
    result = run_search(cfg, out_dir, progress=not args.no_progress)
    wall = time.perf_counter() - start
    m = result.measures
    rate = result.candidates / wall
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
               f"{torch.get_num_threads()} torch threads")
    print(f"\nmachine: {machine}, torch {torch.__version__}")
    print("| candidates | population | MAC budget | time | candidates/s | best params "
          "| best MACs | layers | score |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {result.candidates} | {cfg.population} | {cfg.budget.macs / 1e9:.2f}B "
          f"@{cfg.image_size} | {wall / 60:.1f} min | {rate:.2f} | {m['params'] / 1e6:.2f}M "
          f"| {m['macs'] / 1e9:.3f}B | {m['layers']} | {result.score:.2f} |")
    row = {
        "candidates": result.candidates,
        "seconds": round(wall, 1),
        "candidates_per_s": round(rate, 3),
        "rejected": result.rejected,
        "stalled": result.stalled,
        "best": {"score": result.score, **m},
        "structure": json.loads(result.files["structure"].read_text())["blocks"],
        "settings": {"population": cfg.population, "budget_macs": cfg.budget.macs,
                     "image_size": cfg.image_size, "score": cfg.score,
                     "score_image_size": cfg.score_image_size, "score_batch": cfg.score_batch,
                     "repeats": cfg.repeats, "seed": cfg.seed, "overrides": args.set},
        "machine": machine,
        "torch": torch.__version__,
        "command": " ".join(["benchmarks/nas_search.py", *sys.argv[1:]]),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
