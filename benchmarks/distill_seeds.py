"""Benchmark: `distill run` over several seeds; teacher, baseline and distilled mAP (mean, spread).

    .venv/bin/python benchmarks/distill_seeds.py [--recipe bccd] [--seeds 0 1 2] [--set k=v ...]
        [--tag NAME] [--reuse]

Each seed runs the recipe's stages (teacher, baseline, distilled) with a CSV logger. The teacher
is trained once (seed ``--teacher-seed``) and shared by all student seeds, unless
``--teacher-per-seed`` is given. Prints a Markdown table and writes
``benchmarks/results/distill_<recipe>[-<tag>].json``. Not a test: the figures go into
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from distill.config import load_recipe
from distill.pipeline import run

REPO = Path(__file__).resolve().parents[1]
STAGES = ("teacher", "baseline", "distilled")


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def summarize(reports: list[dict]) -> dict:
    """Per stage mAP / mAP50 spread over seeds, plus the gain and the share of the gap closed."""
    out: dict = {}
    for stage in STAGES:
        rows = [r["stages"][stage] for r in reports if stage in r["stages"]]
        if rows:
            out[stage] = {key: spread([row[key] for row in rows]) for key in ("map", "map_50")}
            out[stage]["model"] = rows[0]["model"]
    gains = [r["comparison"]["distilled_minus_baseline_map"] for r in reports]
    closed = [r["comparison"]["gap_closed"] for r in reports]
    if all(g is not None for g in gains):
        out["gain_map"] = spread(gains)
    if all(c is not None for c in closed):
        out["gap_closed"] = spread(closed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="bccd")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--teacher-per-seed", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    parser.add_argument("--tag", default="", help="run and result name suffix, e.g. maenas "
                        "with --set model.name=maenas_dm2")
    parser.add_argument("--reuse", action="store_true",
                        help="read a seed's finished report.json (same settings!) instead of "
                        "running it again")
    args = parser.parse_args()
    teacher = [] if args.teacher_per_seed else [f"teacher.seed={args.teacher_seed}"]
    reports, start = [], time.perf_counter()
    label = f"{args.recipe}-{args.tag}" if args.tag else args.recipe
    out = REPO / "benchmarks" / "results" / f"distill_{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        recipe = load_recipe(
            REPO / "recipes" / f"{args.recipe}.yaml",
            ["logger=csv", "trainer.progress_bar=false", f"seed={seed}",
             f"name=bench-{label}-s{seed}", "output_dir=runs/bench", *teacher, *args.set],
        )
        done = Path(recipe.output_dir) / recipe.name / "report.json"
        if args.reuse and done.is_file() and set(STAGES) <= set(
            json.loads(done.read_text())["stages"]
        ):
            print(f"seed {seed}: reusing {done}")
            reports.append(json.loads(done.read_text()))
            continue
        result = run(recipe)
        reports.append(json.loads(Path(result["report"]).read_text()))
        summary = {  # rewritten after every seed, so an interrupted benchmark keeps its results
            "recipe": args.recipe,
            "seeds": args.seeds[: len(reports)],
            "overrides": [*teacher, *args.set],
            "summary": summarize(reports),
            "reports": reports,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__},
        }
        out.write_text(json.dumps(summary, indent=2) + "\n")
    print("| stage | model | mAP mean | mAP std | mAP50 mean |")
    print("|---|---|---:|---:|---:|")
    for stage in STAGES:
        if stage in summary["summary"]:
            row = summary["summary"][stage]
            print(f"| {stage} | {row['model']} | {row['map']['mean']:.3f} | "
                  f"{row['map']['std']:.3f} | {row['map_50']['mean']:.3f} |")
    print(json.dumps({k: v for k, v in summary["summary"].items() if k not in STAGES}))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
