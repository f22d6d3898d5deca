"""What a trained search leaves behind: ``front.json``, ``front.png``, ``winner.yaml`` and the
reference presets trained the same way (``references.json``).

``front.json`` lists the Pareto front of every trained candidate (accuracy proxy up, cost down),
cheapest first, members numbered from 0 (``--level modular --member K``), each with its genes,
its recipe ``model`` section, measures and training results. ``winner.yaml`` is the front's most
accurate member as a recipe: ``distill train winner.yaml`` trains it on the search's recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from distill.io import write_text_atomic

from .pareto import draw_front, pareto_front
from .proxy import build_spec
from .search_state import Member, SearchState, write_json
from .trained_search import Evaluator

FRONT_FORMAT = "distill-smnas-front/1"
COST_LABELS = {"latency_ms": "latency, ms (batch 1, this machine)", "macs": "multiply-adds",
               "flops": "FLOPs (torch.utils.flop_counter)"}


def reference_points(evaluator: Evaluator, folder: Path) -> dict[str, dict[str, Any]]:
    """Each ``search.references`` preset measured and trained as the candidates are, kept in
    ``references.json`` (reused while the level's settings are unchanged)."""
    names = list(evaluator.cfg.references)
    path = folder / "references.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("settings") != evaluator.level.settings:
        saved = {"settings": evaluator.level.settings, "models": {}}
    for name in names:
        if name in saved["models"]:
            continue
        spec = {"name": name, "pretrained": False, "options": {}}
        if evaluator.level.norm and evaluator.level.norm != "bn":
            spec["options"]["norm"] = evaluator.level.norm
        spec["image_size"] = build_spec(spec, evaluator.num_classes, "meta").image_size
        measures = evaluator.measure(spec, limits=False)[0]
        measures.update(evaluator.train(spec))
        saved["models"][name] = {"model": spec, "score": measures[evaluator.cfg.metric],
                                 "measures": measures}
        write_text_atomic(path, json.dumps(saved, indent=1) + "\n")
    return {name: saved["models"][name] for name in names}


def _row(k: int, member: Member, evaluator: Evaluator) -> dict[str, Any]:
    candidate = member.structure
    return {"member": k, "key": member.key, "score": member.score,
            "candidate": candidate.to_json(), "model": evaluator.level.spec(candidate),
            "measures": member.measures}


def winner_recipe(row: dict[str, Any], recipe_name: str, level: str,
                  recipe_path: str | Path | None) -> str:
    """``winner.yaml``: the search's recipe (``base:``, when its path is known) with the
    member's ``model`` section."""
    lines = [f"# distill search --level {level}: front member {row['member']} ({row['key']}),",
             f"# accuracy proxy {row['score']:.4f}; train it with `distill train THIS_FILE`.",
             "# Command-line overrides of the search are not repeated here."]
    values: dict[str, Any] = {}
    if recipe_path is not None:
        values["base"] = str(Path(recipe_path).resolve())
    values["name"] = f"{recipe_name}-{level}-{row['member']}"
    values["model"] = row["model"]
    return "\n".join(lines) + "\n" + yaml.safe_dump(values, sort_keys=False)


def write_results(evaluator: Evaluator, state: SearchState, folder: Path,
                  recipe_path: str | Path | None = None) -> dict[str, Any]:
    """Write ``front.json``, ``front.png`` (with matplotlib) and ``winner.yaml``; return the
    ``front.json`` content plus ``files``."""
    level, cfg = evaluator.level, evaluator.cfg
    archive = list(state.archive or [])
    if not archive:
        raise RuntimeError(f"search ({level.name}): no candidate was trained (all {state.attempts}"
                           f" proposals rejected: {state.rejected}); loosen search.budget")

    def point(m: Member) -> tuple[float, float]:
        return m.score, float(m.measures[level.cost])

    front = pareto_front(archive, point)
    rows = [_row(k, m, evaluator) for k, m in enumerate(front)]
    winner = max(rows, key=lambda r: (r["score"], -r["measures"][level.cost]))
    references = reference_points(evaluator, folder) if cfg.references else {}
    summary: dict[str, Any] = {
        "format": FRONT_FORMAT, "level": level.name, "seed": cfg.seed,
        "evaluations": state.evaluated, "attempts": state.attempts,
        "rejected": dict(state.rejected), "stalled": state.stalled,
        "search_seconds": round(state.seconds, 1), "metric": cfg.metric, "cost": level.cost,
        "budget": level.limits, "train_steps": cfg.train_steps,
        "device": {"device": "cpu", "threads": torch.get_num_threads()}, **level.info,
        "winner": winner["member"], "references": references, "front": rows,
    }
    files = {"front": folder / "front.json", "winner": folder / "winner.yaml",
             "population": folder / "population.json"}
    write_json(files["front"], summary)
    write_text_atomic(files["winner"], winner_recipe(winner, evaluator.recipe.name, level.name,
                                                     recipe_path))
    drawn = draw_front(
        folder / "front.png", [point(m) for m in archive], [point(m) for m in front],
        COST_LABELS[level.cost], f"{cfg.metric} after {cfg.train_steps} steps",
        f"{level.name} search: {state.evaluated} candidates, {len(front)} on the front",
        {name: (ref["score"], float(ref["measures"][level.cost]))
         for name, ref in references.items()})
    if drawn is not None:
        files["png"] = drawn
    return {**summary, "files": files}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What `distill search --level ...` prints of ``write_results``'s summary."""
    best = result["front"][result["winner"]]
    m = best["measures"]
    files = result["files"]
    drawn = f" (drawn: {files['png']})" if "png" in files else ""
    return [
        f"{result['level']} search: {result['evaluations']} candidates trained "
        f"({result['search_seconds'] / 60:.1f} min), {len(result['front'])} on the front",
        f"most accurate on the front: member {best['member']} {best['key']}: "
        f"{result['metric']} {best['score']:.4f}, latency {m['latency_ms']:.2f} ms, "
        f"{m['params'] / 1e6:.2f}M params, {m['macs'] / 1e9:.3f} GMACs",
        f"front: {files['front']}{drawn}",
        f"train it: distill train {files['winner']}",
    ]
