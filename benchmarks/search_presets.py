"""Search the committed `maenas_*` student structures (students/structures/*.json).

    .venv/bin/python benchmarks/search_presets.py [--presets maenas_dm3 ...] [--candidates 2000]

Each preset matches an EfficientDet student (`efficientdet_dm3/dm2/dm1`): the searched backbone
must have at most the multiply-adds and the parameters of that student's timm backbone (at its
strides 4..32, at the student's image size). The budget is measured here, not typed in. The
search uses the recipe defaults (entropy score, population 256, seed 0, one torch thread for
bit-stable scores); the result is copied to ``students/structures/<preset>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.config import load_recipe
from distill.models.efficientdet import efficientdet_config
from distill.search.zero_shot import run_search, search_settings
from students.nas.detector import PRESET_PHI, STRUCTURES_DIR

REPO = Path(__file__).resolve().parents[1]


def backbone_cost(name: str, image_size: int) -> tuple[int, int]:
    """Multiply-adds (one image) and parameters of the timm backbone ``name`` up to stride 32."""
    model = timm.create_model(name, features_only=True, out_indices=(2, 3, 4)).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def search_preset(name: str, candidates: int, progress: bool) -> dict:
    """Search ``name``'s structure under its EfficientDet peer's budget; copy it to students/."""
    peer = efficientdet_config(PRESET_PHI[name])
    macs, params = backbone_cost(peer.backbone, peer.image_size)
    recipe = load_recipe(None, [
        f"name=preset-{name}", "output_dir=runs/presets", f"search.image_size={peer.image_size}",
        f"search.budget.macs={macs}", f"search.budget.params={params}",
        f"search.candidates={candidates}",
    ])
    cfg, out_dir = search_settings(recipe)
    start = time.perf_counter()
    result = run_search(cfg, out_dir, progress=progress)
    seconds = time.perf_counter() - start
    shutil.copyfile(result.files["structure"], STRUCTURES_DIR / f"{name}.json")
    row = {"preset": name, "peer_backbone": peer.backbone, "image_size": peer.image_size,
           "budget_macs": macs, "budget_params": params, **result.measures,
           "score": result.score, "candidates": result.candidates, "seconds": round(seconds, 1)}
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESET_PHI))
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    STRUCTURES_DIR.mkdir(parents=True, exist_ok=True)
    rows = [search_preset(name, args.candidates, not args.no_progress) for name in args.presets]
    out = REPO / "benchmarks" / "results" / "search_presets.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
