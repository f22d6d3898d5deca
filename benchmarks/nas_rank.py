"""Benchmark: does the zero-shot score rank architectures in the order of their trained mAP?

    .venv/bin/python benchmarks/nas_rank.py [--recipe search_quickstart] [--count 12]
        [--epochs 15] [--seeds 0 1] [--proxy-steps 150] [--pool 300] [--seed 0] [--tag T]

Draws ``--pool`` structures by seeded random mutation walks from the search space's initial
structure, each step kept only within the recipe's ``search.budget`` (search_quickstart: the
multiply-adds and parameters of efficientdet_dm3's backbone at 128 px). Picks ``--count`` of them
spread evenly over the entropy-score range. Each is trained ``--epochs`` epochs on the recipe's
data (``distill train``, the recipe's student neck and heads) once per seed in ``--seeds``, and
estimated by the structural search's short training (``--proxy-steps`` optimizer steps, seed 0;
``0`` skips it). Reported, each against the mean mAP over seeds with 95% bootstrap intervals
(``benchmarks/rank_stats.py``): Spearman and Kendall of the entropy score, the closed-form
score and the short-training estimate; and the two seeds' mAPs against each other (is the order
stable enough to rank by?).

Resumable: finished trainings are read from their run folders (``resume=true``) and finished
short trainings from the results file, ``benchmarks/results/nas_rank_study[-TAG].json``,
rewritten after every run. Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
from pathlib import Path
from typing import Any

from rank_stats import rank_agreement

from distill.config import load_recipe
from distill.search.measure import Budget
from distill.search.proxy import ProxyTrainer
from distill.search.score import closed_form_score, entropy_score
from distill.search.space import Structure, structure_to_json
from distill.search.zero_shot import budget_from_config, space_from_config
from distill.training import train

REPO = Path(__file__).resolve().parents[1]
SCORES = ("entropy_score", "closed_form_score", "proxy_map")


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


def spread_picks(scored: list[tuple[float, Structure]],
                 count: int) -> list[tuple[float, Structure]]:
    """``count`` of the (score, structure) pairs, evenly spaced over the sorted score range."""
    ordered = sorted(scored, key=lambda pair: pair[0])
    if count < 3 or count > len(ordered):
        raise SystemExit(f"--count {count}: need 3..{len(ordered)} (the pool's size)")
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]


def statistics_of(rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Rank agreement of each score with the mean mAP, and of seed against seed, over the rows
    that have every seed (and, for the proxy, its estimate)."""
    done = [r for r in rows if all(str(s) in r["maps"] for s in seeds)]
    out: dict[str, Any] = {"architectures_done": len(done)}
    for key in SCORES:
        pairs = [(r[key], r["map_mean"]) for r in done if r.get(key) is not None]
        if len(pairs) >= 3:
            out[key] = rank_agreement(*zip(*pairs))
    if len(seeds) >= 2 and len(done) >= 3:
        out["seed_vs_seed"] = rank_agreement([r["maps"][str(seeds[0])] for r in done],
                                             [r["maps"][str(seeds[1])] for r in done])
    return out


def print_table(rows: list[dict[str, Any]], stats: dict[str, Any]) -> None:
    """The per-architecture table and the correlations, as markdown."""
    print("| # | entropy score | closed-form score | params | MACs | layers | proxy mAP | "
          "mAP per seed | mAP mean |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        proxy = "" if r.get("proxy_map") is None else f"{r['proxy_map']:.4f}"
        per_seed = ", ".join(f"{v:.4f}" for v in r["maps"].values())
        mean = "" if r.get("map_mean") is None else f"{r['map_mean']:.4f}"
        print(f"| {r['index']} | {r['entropy_score']:.1f} | {r['closed_form_score']:.1f} | "
              f"{r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {r['layers']} | {proxy} | "
              f"{per_seed} | {mean} |")
    for key, value in stats.items():
        if isinstance(value, dict) and value["spearman"] is not None:
            print(f"{key}: Spearman {value['spearman']} {value['spearman_ci']}, Kendall "
                  f"{value['kendall']} {value['kendall_ci']} (p {value['kendall_p']}), "
                  f"n {value['n']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="search_quickstart")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--proxy-steps", type=int, default=150,
                        help="the short-training estimate's optimizer steps (0: skip it)")
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="seed of the structure pool")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for training")
    parser.add_argument("--tag", default="", help="suffix of the results file and run folder")
    args = parser.parse_args()
    recipe_file = REPO / "recipes" / f"{args.recipe}.yaml"
    base = load_recipe(recipe_file, args.set)
    search = base.search
    space, budget = space_from_config(search.space), budget_from_config(search.budget)
    pool = random_walks(space, budget, search.image_size, args.pool, args.seed)
    picks = spread_picks([(entropy_score(s, search.score_image_size, search.score_batch,
                                         search.stage_weights, search.repeats, search.seed), s)
                          for s in pool], args.count)
    suffix = f"-{args.tag}" if args.tag else ""
    folder = REPO / "runs" / "bench" / f"nas-rank-study{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    out = REPO / "benchmarks" / "results" / f"nas_rank_study{suffix}.json"
    earlier = json.loads(out.read_text())["rows"] if out.is_file() else []
    rows: list[dict[str, Any]] = []
    for i, (score, structure) in enumerate(picks):
        blocks = json.dumps(structure_to_json(structure))
        key = f"{i}-{hashlib.sha1(blocks.encode()).hexdigest()[:8]}"  # a new pool: new folders
        path = folder / f"structure-{key}.json"
        path.write_text(json.dumps({"blocks": json.loads(blocks)}, indent=1) + "\n")
        known = next((r for r in earlier if r["key"] == key), {})
        rows.append({"index": i, "key": key, "structure": str(path),
                     "entropy_score": round(score, 2),
                     "closed_form_score": round(closed_form_score(structure,
                                                                  search.stage_weights), 2),
                     **budget.measure(structure, search.image_size),
                     "proxy_map": known.get("proxy_map"), "maps": {}, "map_mean": None})

    def save() -> None:
        stats = statistics_of(rows, args.seeds)
        out.write_text(json.dumps({
            "recipe": args.recipe, "overrides": args.set, "epochs": args.epochs,
            "seeds": args.seeds, "proxy_steps": args.proxy_steps, "pool": len(pool),
            "statistics": stats, "rows": rows}, indent=2) + "\n")
        print_table(rows, stats)

    proxy = ProxyTrainer(base, args.proxy_steps) if args.proxy_steps else None
    for seed in args.seeds:
        for row in rows:
            recipe = load_recipe(recipe_file, [
                "logger=csv", "trainer.progress_bar=false", "resume=true", f"seed={seed}",
                f"trainer.epochs={args.epochs}", f"trainer.val_every={args.epochs}",
                f"model.options.structure={row['structure']}", *args.set])
            metrics = train(recipe, run_dir=folder / f"arch-{row['key']}-s{seed}")
            row["maps"][str(seed)] = round(float(metrics["map"]), 6)
            row["map_mean"] = round(statistics.fmean(row["maps"].values()), 6)
            save()
        if proxy is not None and seed == args.seeds[0]:  # after the first seed's trainings
            for row in rows:
                if row["proxy_map"] is None:
                    spec = {"name": base.model.name, "image_size": search.image_size,
                            "options": {**base.model.options, "structure": row["structure"]}}
                    row["proxy_map"] = proxy(spec)["map"]
                    save()
    print(f"written: {out}")


if __name__ == "__main__":
    main()
