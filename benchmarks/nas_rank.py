"""Benchmark: does the zero-shot score rank architectures in the order of their trained mAP?

    .venv/bin/python benchmarks/nas_rank.py [--recipe search_quickstart] [--count 6]
        [--epochs 10] [--pool 300] [--seed 0]

Draws ``--pool`` structures by seeded random mutation walks from the search space's initial
structure, each step kept only within the recipe's ``search.budget`` (search_quickstart: the
multiply-adds and parameters of efficientdet_dm3's backbone at 128 px). Picks ``--count`` of them
spread evenly over the entropy-score range, trains each briefly on the recipe's data
(``distill train``, ``--epochs`` epochs, the recipe's student neck and heads), and reports the
Spearman and Kendall rank correlations between score and mAP (torchmetrics), for the entropy
and the closed-form score. Writes ``benchmarks/results/nas_rank.json``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef

from distill.config import load_recipe
from distill.training import train
from students.nas.measure import Budget
from students.nas.score import closed_form_score, entropy_score
from students.nas.search import budget_from_config, space_from_config
from students.nas.space import Structure, structure_to_json

REPO = Path(__file__).resolve().parents[1]


def random_walks(space, budget: Budget, image_size: int, pool: int, seed: int) -> list[Structure]:
    """``pool`` distinct structures: walks of 1..60 mutations from the initial structure, each
    step taken only when the result stays within ``budget``."""
    rng = random.Random(seed)
    found: dict[str, Structure] = {}
    for _ in range(pool * 20):
        structure = space.initial()
        for _ in range(rng.randint(1, 60)):
            child = space.mutate(structure, rng)
            if not budget.violations(child, image_size):
                structure = child
        found.setdefault(json.dumps(structure_to_json(structure)), structure)
        if len(found) == pool:
            break
    return list(found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="search_quickstart")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for training")
    args = parser.parse_args()
    recipe_file = REPO / "recipes" / f"{args.recipe}.yaml"
    search = load_recipe(recipe_file).search
    space, budget = space_from_config(search.space), budget_from_config(search.budget)
    pool = random_walks(space, budget, search.image_size, args.pool, args.seed)
    scored = sorted(
        ((entropy_score(s, search.score_image_size, search.score_batch,
                        search.stage_weights, search.repeats, search.seed), s) for s in pool),
        key=lambda pair: pair[0],
    )
    picks = [scored[round(i * (len(scored) - 1) / (args.count - 1))] for i in range(args.count)]
    folder = REPO / "runs" / "bench" / "nas-rank"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (score, structure) in enumerate(picks):
        path = folder / f"structure-{i}.json"
        path.write_text(json.dumps({"blocks": structure_to_json(structure)}, indent=1) + "\n")
        recipe = load_recipe(recipe_file, [
            "logger=csv", "trainer.progress_bar=false", "output_dir=runs/bench",
            f"name=nas-rank-{i}", f"trainer.epochs={args.epochs}",
            f"trainer.val_every={args.epochs}", f"model.options.structure={path}", *args.set,
        ])
        start = time.perf_counter()
        metrics = train(recipe)
        rows.append({"structure": str(path), "entropy_score": score,
                     "closed_form_score": closed_form_score(structure, search.stage_weights),
                     **budget.measure(structure, search.image_size), "map": metrics["map"],
                     "map_50": metrics["map_50"],
                     "train_seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]))
    maps = torch.tensor([r["map"] for r in rows], dtype=torch.float64)
    result = {"recipe": args.recipe, "epochs": args.epochs, "pool": len(pool), "rows": rows}
    for key in ("entropy_score", "closed_form_score"):
        scores = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        result[f"spearman_{key}"] = round(float(spearman_corrcoef(scores, maps)), 3)
        result[f"kendall_{key}"] = round(float(kendall_rank_corrcoef(scores, maps)), 3)
    print("| # | entropy score | closed-form score | params | MACs | layers | mAP | mAP50 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rows):
        print(f"| {i} | {r['entropy_score']:.1f} | {r['closed_form_score']:.1f} | "
              f"{r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {r['layers']} | "
              f"{r['map']:.3f} | {r['map_50']:.3f} |")
    print({k: v for k, v in result.items() if k.startswith(("spearman", "kendall"))})
    out = REPO / "benchmarks" / "results" / "nas_rank.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
