"""Benchmark: the structural search's best student at a preset's latency against that preset.

    .venv/bin/python benchmarks/smnas_vs_preset.py [--recipe recipes/search_structural.yaml]
        [--reference efficientdet_dm3] [--seeds 0 1] [--set key=value ...]

Reads the finished search's ``front.json`` (``distill search RECIPE --level structural``), picks
the most accurate front member whose search-time latency is at most the reference's (the
``search.references`` preset, timed in the same search), and trains both with the search
recipe's own schedule (the Quick start's 15 epochs for ``recipes/search_structural.yaml``), one
run per seed, paired: same seed, same data order and augmentation. Both are timed again here,
side by side in this process (batch 1, median of 100 rounds of one forward each), so the
latency ratio is against a peer in one run. Prints a table and writes
``benchmarks/results/smnas_vs_<reference>.json`` after every run; finished trainings are read
from their run folders (``resume=true``), so a killed benchmark continues. Not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path
from typing import Any

import torch
import yaml

from distill.config import load_recipe
from distill.latency import measure_latencies
from distill.search.proxy import build_spec
from distill.training import prepare_data, train

REPO = Path(__file__).resolve().parents[1]


def pick_member(front: dict[str, Any], reference: str) -> dict[str, Any]:
    """The most accurate front member no slower (search-time latency) than ``reference``."""
    ref = front["references"].get(reference)
    if ref is None:
        raise SystemExit(f"front.json has no reference {reference!r} (search.references: "
                         f"{sorted(front['references'])})")
    limit = ref["measures"]["latency_ms"]
    fits = [m for m in front["front"] if m["measures"]["latency_ms"] <= limit]
    if not fits:
        raise SystemExit(f"no front member is as fast as {reference} ({limit:.2f} ms)")
    return max(fits, key=lambda m: m["score"])


def recipe_file(base: Path, name: str, model: dict[str, Any], folder: Path) -> Path:
    """A recipe inheriting ``base`` with ``model`` as its model section."""
    path = folder / f"{name}.yaml"
    values = {"base": str(base.resolve()), "name": name, "model": model}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def latencies_ms(specs: dict[str, dict[str, Any]], num_classes: int, channels_last: bool,
                 runs: int = 100) -> dict[str, float]:
    """Median batch-1 CPU latency of freshly built models of ``specs``, timed in turn (one
    forward each per round) in the memory format the search timed them in."""
    models = {}
    for name, spec in specs.items():
        model = build_spec(spec, num_classes).eval()
        model.set_channels_last(channels_last)
        models[name] = (model, int(spec["image_size"]))
    return {name: result["median_ms"]
            for name, result in measure_latencies(models, runs=runs).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "search_structural.yaml")
    parser.add_argument("--reference", default="efficientdet_dm3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for training")
    args = parser.parse_args()
    base = load_recipe(args.recipe)
    search_dir = Path(base.output_dir) / base.name / "search" / "structural"
    front = json.loads((search_dir / "front.json").read_text())
    member = pick_member(front, args.reference)
    rows = {name: {"model": entry["model"], "search_score": entry["score"],
                   "search_latency_ms": entry["measures"]["latency_ms"], "maps": {}}
            for name, entry in (("searched", member),
                                (args.reference, front["references"][args.reference]))}
    folder = REPO / "runs" / "bench" / f"smnas-vs-{args.reference}"
    folder.mkdir(parents=True, exist_ok=True)
    out = REPO / "benchmarks" / "results" / f"smnas_vs_{args.reference}.json"
    result: dict[str, Any] = {"recipe": str(args.recipe), "member": member["member"],
                              "seeds": args.seeds, "epochs": base.trainer.epochs, "rows": rows}
    for seed in args.seeds:
        for name, row in rows.items():
            path = recipe_file(args.recipe, f"smnas-vs-{name}", row["model"], folder)
            recipe = load_recipe(path, ["logger=csv", "trainer.progress_bar=false", "resume=true",
                                        f"seed={seed}", *args.set])
            metrics = train(recipe, run_dir=folder / f"{name}-s{seed}")
            row["maps"][str(seed)] = round(float(metrics["map"]), 6)
            row["map_mean"] = round(statistics.fmean(row["maps"].values()), 6)
            out.write_text(json.dumps(result, indent=2) + "\n")
    classes = prepare_data(base).num_classes
    timed = latencies_ms({name: row["model"] for name, row in rows.items()}, classes,
                         base.trainer.channels_last)
    for name, row in rows.items():
        row["latency_ms"] = round(timed[name], 3)
    searched, ref = rows["searched"], rows[args.reference]
    result.update(latency_ratio=round(searched["latency_ms"] / ref["latency_ms"], 3),
                  map_gain=round(searched["map_mean"] - ref["map_mean"], 6),
                  machine={"cpu": platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__})
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| model | search latency ms | latency ms (here) | mAP per seed | mAP mean |")
    print("|---|---:|---:|---|---:|")
    for name, row in rows.items():
        per_seed = ", ".join(f"{v:.4f}" for v in row["maps"].values())
        print(f"| {name} | {row['search_latency_ms']:.2f} | {row['latency_ms']:.2f} | "
              f"{per_seed} | {row['map_mean']:.4f} |")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
