"""DAMO-YOLO's published TinyNAS backbones against our zero-shot search under the same budget.

    .venv/bin/python benchmarks/tinynas_vs_search.py [--structures tinynas_l20_k1kx ...]

DAMO-YOLO-T and -S use searched ``k1kx`` structures (``students.damo_tinynas``), written in the
block format of our MAE-NAS space. Each is converted to our ``structure.json`` form (a 3x3
stride-2 stem conv where DAMO has a Focus stem; no SPP; a 1x1 projection shortcut in the first
unit of a stage, where DAMO's stride-2 units have none), measured by our counters at DAMO's
search resolution (640 px), and its params, multiply-adds and layers become the budget of our
search (entropy score, population 256, 2000 candidates, seed 0, one torch thread). Both
structures are scored by the same scorer and written to ``benchmarks/results/tinynas/``, so the
two can be trained side by side as the backbone of one detector
(``model.options.backbone=benchmarks/results/tinynas/<name>.json``, see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distill.config import load_recipe
from distill.search.measure import Budget
from distill.search.space import Structure, structure_to_json
from distill.search.zero_shot import run_search, search_settings, structure_scorer
from students.damo_tinynas import TINYNAS_STRUCTURES, search_structure

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "tinynas"
IMAGE_SIZE = 640  # DAMO-YOLO searched and trains T / S at 640 px


def write_structure(path: Path, structure: Structure, extra: dict) -> None:
    """``structure.json`` that ``model.options.backbone`` reads, with ``extra`` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "distill-nas-structure/1",
                                "blocks": structure_to_json(structure), **extra}, indent=1)
                    + "\n")


def compare(name: str, candidates: int, progress: bool, overrides: list[str], tag: str) -> dict:
    """Search under ``name``'s budget (``overrides``: more ``search.*`` settings); score both;
    write both structures (the searched one as ``<name>_searched<tag>.json``)."""
    published = search_structure(name)
    measures = Budget().measure(published, IMAGE_SIZE)
    recipe = load_recipe(None, [
        f"name=tinynas-{name}{tag}", "output_dir=runs/tinynas", f"search.image_size={IMAGE_SIZE}",
        f"search.budget.macs={measures['macs']}", f"search.budget.params={measures['params']}",
        f"search.budget.layers={measures['layers']}", f"search.candidates={candidates}",
        *overrides,
    ])
    cfg, out_dir = search_settings(recipe)
    start = time.perf_counter()
    result = run_search(cfg, out_dir, progress=progress)
    seconds = time.perf_counter() - start
    published_score = structure_scorer(cfg)(published)
    write_structure(OUT / f"{name}_published.json", published,
                    {"score": published_score, "measures": measures, "image_size": IMAGE_SIZE,
                     "source": f"DAMO-YOLO's {name} (students.damo_tinynas.search_structure)"})
    write_structure(OUT / f"{name}_searched{tag}.json", result.structure,
                    {"score": result.score, "measures": result.measures,
                     "image_size": IMAGE_SIZE, "budget": measures, "seed": cfg.seed,
                     "candidates": result.candidates, "overrides": overrides})
    row = {"structure": name, "tag": tag, "overrides": overrides, "image_size": IMAGE_SIZE,
           "budget": measures,
           "published": {"score": published_score, **measures},
           "searched": {"score": result.score, **result.measures},
           "candidates": result.candidates, "search_seconds": round(seconds, 1)}
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", nargs="+", default=list(TINYNAS_STRUCTURES),
                        choices=list(TINYNAS_STRUCTURES))
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more search settings, e.g. search.space.min_width=16")
    parser.add_argument("--tag", default="", help="suffix of the searched files, e.g. -wide")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [compare(name, args.candidates, not args.no_progress, args.set, args.tag)
            for name in args.structures]
    out = REPO / "benchmarks" / "results" / f"tinynas_vs_search{args.tag}.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
