"""Benchmark: does distillation pay? One teacher, paired baseline and distilled students, seeds.

    .venv/bin/python benchmarks/distill_evidence.py --dataset bccd [--methods cwd prediction ...]
        [--seeds 0 1 2] [--method-seeds 0] [--set key=value ...] [--tag NAME]
    .venv/bin/python benchmarks/distill_evidence.py --dataset embedded --grid [fgd crosskd ...]
    .venv/bin/python benchmarks/distill_evidence.py --dataset bccd --tag best \
        --best-from benchmarks/results/evidence_embedded-grid.json --default none --methods \
        --seeds 0 1 2 --method-seeds 0 1 2

Per dataset (``embedded`` = recipes/quickstart.yaml, ``bccd``, ``aquarium``): the recipe's
teacher is trained once (or reused from runs/teachers/), then for each seed the baseline student
and the distilled students of each method train on the same schedule with the same images, order
and augmentation (the data order and the student's initialisation follow the seed). The
recipe's default method and the baseline run ``--seeds``; the other methods ``--method-seeds``.

Resumable: every run lives in ``<runs>/evidence/<dataset>/<run>`` (``--runs``, default
``runs/``; the teacher in ``<runs>/teachers/``) and is trained with
``resume=true``, so a killed benchmark continues where it stopped and finished runs are read,
not trained again (nor are runs already in the results file, even where their folders are gone).
A results file made on another CPU or with other library versions is refused: the same seed
trains to another result there, so its runs are not paired with new ones. After each run the
summary is rewritten to ``benchmarks/results/evidence_<dataset>.json`` (and its table printed):
mean +- std of mAP, the paired gain (distilled - baseline, same seed) with its std, and the share
of the teacher-baseline gap closed. Not a test: the figures go into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import torch
import yaml
from method_grid import METHODS as METHOD_NAMES
from method_grid import TARGETS, best_methods, best_per_method, canonical_terms, grid_methods

from distill.config import Recipe, load_recipe
from distill.data import DetectionDataModule
from distill.stages import derive, obtain_teacher, run_distilled
from distill.training import prepare_data, train

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"embedded": "quickstart", "bccd": "bccd", "aquarium": "aquarium"}

# method -> distill.terms (the weight of a term without one: the recipe's distill.weight)
AUTO = {"schedule": "auto", "start": 1.0, "end": 0.1}
METHODS: dict[str, list[dict]] = {
    "cwd": [{"kind": "feature", "loss": "cwd"}],
    "fgd": [{"kind": "feature", "loss": "fgd", "weight": AUTO}],
    "mgd": [{"kind": "feature", "loss": "mgd", "weight": AUTO}],
    "prediction": [{"kind": "prediction", "weight": AUTO}],
    "crosskd": [{"kind": "crosskd", "weight": AUTO}],
    "prediction+cwd": [{"kind": "prediction", "weight": AUTO},
                       {"kind": "feature", "loss": "cwd", "weight": AUTO}],
    "crosskd+cwd": [{"kind": "crosskd", "weight": AUTO},
                    {"kind": "feature", "loss": "cwd", "weight": AUTO}],
}


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and the count."""
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarize(teacher_map: float | None, runs: dict[str, dict[int, float]], default: str) -> dict:
    """Per method: mAP spread, paired gain over the seeds it shares with the baseline, gap."""
    base = runs.get("baseline", {})
    out: dict = {"teacher": teacher_map, "default_method": default, "methods": {}}
    if base:
        out["baseline"] = spread(list(base.values()))
    gap = teacher_map - out["baseline"]["mean"] if base and teacher_map is not None else None
    for method, maps in runs.items():
        if method == "baseline" or not maps:
            continue
        row: dict = {"map": spread(list(maps.values()))}
        gains = [maps[s] - base[s] for s in maps if s in base]
        if gains:
            row["gain"] = spread(gains)
            if gap and gap > 0:
                row["gap_closed"] = round(row["gain"]["mean"] / gap, 3)
        out["methods"][method] = row
    return out


def table(summary: dict) -> str:
    """The summary as a Markdown table."""
    lines = ["| run | seeds | mAP mean +- std | paired gain +- std | gap closed |",
             "|---|---:|---:|---:|---:|",
             f"| teacher | 1 | {summary['teacher'] or float('nan'):.4f} | | |"]
    if "baseline" in summary:
        b = summary["baseline"]
        lines.append(f"| baseline | {b['n']} | {b['mean']:.4f} +- {b['std']:.4f} | | |")
    for method, row in summary["methods"].items():
        m, g = row["map"], row.get("gain")
        gain = f"{g['mean'] * 100:+.2f} +- {g['std'] * 100:.2f} pts" if g else ""
        closed = f"{row['gap_closed'] * 100:.0f}%" if "gap_closed" in row else ""
        star = " (default)" if method == summary["default_method"] else ""
        lines.append(f"| {method}{star} | {m['n']} | {m['mean']:.4f} +- {m['std']:.4f} | "
                     f"{gain} | {closed} |")
    return "\n".join(lines)


def base_recipe(dataset: str, overrides: list[str], runs: Path) -> Recipe:
    """The dataset's recipe for the benchmark: CSV logs, no progress bar, resumable runs."""
    return load_recipe(REPO / "recipes" / f"{RECIPES[dataset]}.yaml",
                       ["logger=csv", "trainer.progress_bar=false", "resume=true",
                        f"output_dir={runs}", *overrides])


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="embedded")
    parser.add_argument("--define", nargs="*", default=[], metavar="NAME=TERMS",
                        help="extra methods, e.g. 'p3=[{kind: prediction, weight: {target: 3}}]'")
    parser.add_argument("--methods", nargs="*", default=None,
                        help=f"methods to run (default: all of {', '.join(METHODS)})")
    parser.add_argument("--default", default="recipe",
                        help="the method that gets --seeds: 'recipe' (the recipe's own terms), "
                        "a method name, or 'none' (baselines only)")
    parser.add_argument("--grid", nargs="*", default=None, metavar="METHOD",
                        help="the equal-budget grid (method_grid.py) of these methods "
                        "(none named: all) on --method-seeds")
    parser.add_argument("--grid-targets", nargs="+", type=float, default=None, metavar="T",
                        help="the grid's auto targets (default: 4 16 32); widen it where a "
                        "method's best sits on an edge")
    parser.add_argument("--best-from", type=Path, default=None, metavar="RESULTS",
                        help="a grid's results file: run each method's best point there and "
                        "the two-term combinations of those (method_grid.best_methods)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--method-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    parser.add_argument("--tag", default="", help="result and run folder suffix")
    parser.add_argument("--runs", type=Path, default=REPO / "runs",
                        help="where teachers and runs live (keep it across sessions to resume)")
    return parser


def resolve_methods(parser: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> dict[str, list[dict]]:
    """Every method definition (built-in, ``--define``, ``--grid``); sets ``args.methods`` to
    the ones to run and stops with a usage error on an unknown name."""
    methods = dict(METHODS)
    for item in args.define:
        name, _, terms = item.partition("=")
        methods[name] = yaml.safe_load(terms)
    if args.grid_targets is not None and args.grid is None:
        parser.error("--grid-targets widens a grid: name it with --grid [METHOD ...]")
    if args.grid is not None:  # the grid alone, unless --methods names more
        try:
            grid = grid_methods(tuple(args.grid or METHOD_NAMES),
                                targets=tuple(args.grid_targets or TARGETS))
        except ValueError as err:
            parser.error(str(err))
        methods.update(grid)
        args.methods = [*(args.methods or []), *grid]
    if args.best_from is not None:
        if not args.best_from.is_file():
            parser.error(f"--best-from {args.best_from}: no such results file")
        grid = json.loads(args.best_from.read_text())
        best = best_methods(grid["maps"], grid["terms"])
        if not best:
            parser.error(f"--best-from {args.best_from}: no grid points in its maps")
        methods.update(best)
        args.methods = [*(args.methods or []), *best]
    args.methods = list(METHODS) if args.methods is None else args.methods
    unknown = [m for m in args.methods if m not in methods]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; known: {', '.join(methods)}")
    return methods


def merge_earlier(out: Path, runs: dict[str, dict[int, float]], methods: dict) -> float:
    """Add the finished runs (and their terms) of earlier or concurrent invocations with this
    label from ``out`` to ``runs`` and ``methods``, keeping this invocation's own values;
    returns the wall seconds already recorded there (0 without a file)."""
    if not out.is_file():
        return 0.0
    earlier = json.loads(out.read_text())
    for method, maps in earlier["maps"].items():
        mine = runs.setdefault(method, {})
        for seed, value in maps.items():
            mine.setdefault(int(seed), value)
    for method, terms in earlier.get("terms", {}).items():
        methods.setdefault(method, terms)
    return earlier.get("wall_seconds", 0)


def earlier_teacher(out: Path) -> float | None:
    """The teacher's mAP recorded in ``out`` (None: no file, or only baselines there yet): an
    invocation that trains baselines alone, and so loads no teacher, keeps it in the file."""
    if not out.is_file():
        return None
    return json.loads(out.read_text()).get("summary", {}).get("teacher")


def overrides_mismatch(out: Path, overrides: list[str]) -> str | None:
    """Why ``out``'s runs cannot be merged with runs made with ``overrides`` (None: they can)."""
    if not out.is_file():
        return None
    earlier = json.loads(out.read_text()).get("overrides", [])
    if sorted(earlier) == sorted(overrides):
        return None
    return (f"{out} holds runs made with --set {earlier}, not {overrides}: give the same "
            "overrides or another --tag")


def terms_mismatch(out: Path, methods: dict, names: list[str]) -> str | None:
    """Why runs of ``names`` (with their terms in ``methods``) cannot join ``out``'s runs of the
    same names (None: they can): a name whose terms changed, e.g. ``recipe`` after the recipe's
    default changed, would otherwise mix two methods' seeds in one row, and reuse the old
    method's finished run folders."""
    if not out.is_file():
        return None
    earlier = json.loads(out.read_text()).get("terms", {})
    changed = [n for n in names
               if n in earlier and canonical_terms(earlier[n]) != canonical_terms(methods[n])]
    if not changed:
        return None
    return (f"{out} holds runs of {', '.join(changed)} with other terms "
            f"({'; '.join(f'{n}: {earlier[n]}' for n in changed)}): name the method otherwise "
            "(--define) or give another --tag")


def recorded(runs: dict[str, dict[int, float]], method: str, seed: int) -> float | None:
    """The mAP of ``method`` at ``seed`` already in the results (None: not run yet). A recorded
    run is not trained again, even where its run folder is gone: a new machine keeps the
    committed results file but not ``runs/``."""
    return runs.get(method, {}).get(seed)


# what a seed's numbers depend on beyond the recipe: the same seed, recipe and code gave a D0
# teacher 0.190 on one machine and 0.246 on another, so runs of two environments are not paired
ENVIRONMENT_KEYS = ("cpu_model", "torch", "numpy", "pillow", "timm")


def environment() -> dict[str, object]:
    """This machine and the library versions a run's numbers depend on (``ENVIRONMENT_KEYS``),
    plus the thread count (which moves a run by less than a seed does)."""
    cpu = cpu_model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.partition(":")[2].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        cpu_model = models[0] if models else cpu_model
    return {"cpu": cpu, "cpu_model": cpu_model,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "numpy": version("numpy"), "pillow": version("pillow"), "timm": version("timm")}


def environment_mismatch(out: Path, here: dict[str, object]) -> str | None:
    """Why ``out``'s runs cannot be paired with runs made in the environment ``here`` (None:
    they can): another CPU or library version trains a seed to another result."""
    if not out.is_file():
        return None
    earlier = json.loads(out.read_text()).get("machine", {})
    differ = [f"{key} {earlier.get(key, 'not recorded')!r} there, {here[key]!r} here"
              for key in ENVIRONMENT_KEYS if earlier.get(key) != here[key]]
    if not differ:
        return None
    return (f"{out} holds runs made in another environment ({'; '.join(differ)}): a seed there "
            "is not paired with the same seed here; give another --tag")


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()

    label = f"{args.dataset}-{args.tag}" if args.tag else args.dataset
    recipe = base_recipe(args.dataset, args.set, args.runs)
    root = args.runs / "evidence" / label
    out = REPO / "benchmarks" / "results" / f"evidence_{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if (mismatch := overrides_mismatch(out, args.set)) is not None:
        parser.error(mismatch)
    if (mismatch := environment_mismatch(out, environment())) is not None:
        parser.error(mismatch)
    methods = resolve_methods(parser, args)
    default = args.default
    if default == "recipe":
        methods["recipe"] = recipe.distill.terms or [{"kind": "feature"}]
    if default != "none" and default not in methods:
        parser.error(f"--default {default}: not a method; known: {', '.join(methods)}")
    to_run = [*([] if default == "none" else [default]), *args.methods]
    if (mismatch := terms_mismatch(out, methods, to_run)) is not None:
        parser.error(mismatch)
    data: DetectionDataModule = prepare_data(recipe)
    teacher, teacher_metrics = None, {"map": None}
    if default != "none" or args.methods:  # baselines alone need no teacher
        obtained = obtain_teacher(recipe, data.num_classes, root)
        teacher, teacher_metrics = obtained.model, obtained.metrics
    runs: dict[str, dict[int, float]] = {"baseline": {}}
    earlier_seconds = merge_earlier(out, runs, methods)
    start = time.perf_counter() - earlier_seconds  # wall time over every invocation

    def record(method: str, seed: int, metrics: dict) -> None:
        merge_earlier(out, runs, methods)  # another invocation with this label may have written
        runs.setdefault(method, {})[seed] = float(metrics["map"])
        teacher_map = teacher_metrics["map"]
        teacher_map = earlier_teacher(out) if teacher_map is None else float(teacher_map)
        summary = summarize(teacher_map, runs, default)
        partial = out.with_suffix(f".{os.getpid()}.partial")  # renamed: never half a file
        partial.write_text(json.dumps({
            "dataset": args.dataset, "recipe": RECIPES[args.dataset], "overrides": args.set,
            "terms": {m: methods[m] for m in runs if m != "baseline"},
            "summary": summary, "maps": runs, "wall_seconds": round(time.perf_counter() - start),
            "machine": environment(),
        }, indent=2) + "\n")
        partial.replace(out)
        print(table(summary), flush=True)

    firsts = ["baseline"] if default == "none" else ["baseline", default]
    plan = [(seed, m) for seed in args.seeds for m in firsts]
    plan += [(seed, m) for seed in args.method_seeds for m in args.methods
             if (seed, m) not in plan]
    for seed, method in plan:
        if (value := recorded(runs, method, seed)) is not None:  # perhaps by a concurrent run
            print(f"recorded: {method} seed {seed} mAP {value:.4f}", flush=True)
            continue
        seeded = derive(recipe, {"seed": seed, "name": f"{label}-{method}-s{seed}"})
        if method == "baseline":
            metrics = train(seeded, run_dir=root / f"baseline-s{seed}")
        else:
            distilled = derive(seeded, {"distill": {"terms": methods[method]}})
            metrics, _ = run_distilled(distilled, teacher, data.num_classes,
                                       root / f"{method}-s{seed}")
        record(method, seed, metrics)
    if args.grid is not None:
        maps = json.loads(out.read_text())["maps"]
        for method, (name, value) in best_per_method(maps).items():
            print(f"best {method}: {name} {value:.4f}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
