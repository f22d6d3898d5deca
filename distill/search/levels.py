"""`distill search --level structural | modular`: the two SM-NAS levels, set up from a recipe.

``run_level`` builds the level (space, budget limits, cost, settings), evolves it
(``distill.search.trained_search``) and writes the results (``distill.search.results``) into
``<search output>/structural`` or ``<search output>/modular-<K>``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from distill.config import Recipe
from distill.errors import RecipeError
from distill.search_config import StructuralSpaceConfig

from .presets import is_structure
from .results import write_results
from .structural import Candidate, StructuralSpace, candidate_from_json
from .trained_search import Evaluator, Level, evolve

LEVELS: tuple[str, ...] = ("zero_shot", "structural", "modular")
BUDGET_KEYS: tuple[str, ...] = ("params", "macs", "latency_ms")


def level_dir(out_dir: Path, level: str, member: int | None = None) -> Path:
    """``<out>/structural`` or ``<out>/modular-<member>``."""
    return out_dir / ("structural" if level == "structural" else f"modular-{member}")


def budget_limits(cfg: Any) -> dict[str, float]:
    """``search.budget`` as limits on the whole detector's measures; ``layers`` is the
    zero-shot level's alone."""
    if cfg.budget.layers is not None:
        raise RecipeError("'search.budget.layers' counts backbone convs of the zero-shot level; "
                          "the structural and modular levels take params, macs and latency_ms")
    return {key: float(getattr(cfg.budget, key)) for key in BUDGET_KEYS
            if getattr(cfg.budget, key) is not None}


def recipe_digest(recipe: Recipe) -> str:
    """A short hash of what shapes a candidate's training: data, optimizer, trainer, seed and
    the model settings every candidate keeps (not logging, workers or the progress bar)."""
    values = OmegaConf.to_container(OmegaConf.structured(recipe))
    values["data"].pop("num_workers", None)
    for key in ("progress_bar", "log_every"):
        values["trainer"].pop(key, None)
    shaping = {k: values[k] for k in ("data", "optim", "trainer", "seed")}
    shaping["model"] = {k: values["model"][k] for k in ("bn_momentum", "drop_path_rate", "fusion")}
    return hashlib.sha1(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]


def _common_settings(recipe: Recipe) -> dict[str, Any]:
    cfg = recipe.search
    return {"seed": cfg.seed, "train_steps": cfg.train_steps, "val_batches": cfg.val_batches,
            "metric": cfg.metric, "latency_runs": cfg.latency_runs,
            "trained_population": cfg.trained_population, "random_initial": cfg.random_initial,
            "crossover": cfg.crossover, "budget": budget_limits(cfg),
            "recipe": recipe_digest(recipe)}


def check_backbones(space: StructuralSpaceConfig) -> None:
    """Every backbone is a timm model or a searched structure; else a ``RecipeError``."""
    import timm

    bad = [b for b in space.backbones if not (is_structure(b) or timm.is_model(b))]
    if bad:
        raise RecipeError(f"'search.structural.backbones': unknown {bad}; give timm model names "
                          "(timm.list_models()), maenas_* presets or structure.json paths")


def structural_level(recipe: Recipe) -> Level:
    """The structural level of ``recipe.search``."""
    cfg = recipe.search
    space = StructuralSpace.from_config(cfg.structural)
    check_backbones(space)
    settings = {"level": "structural", "space": asdict(space), "cost": cfg.cost,
                **_common_settings(recipe)}
    return Level(name="structural", space=space, seeds=[], cost=cfg.cost,
                 limits=budget_limits(cfg), settings=settings,
                 info={"space_size": space.size()})


def front_member(structural_dir: Path, member: int) -> dict[str, Any]:
    """Member ``member`` of ``structural_dir/front.json``; errors name the file and the range."""
    path = structural_dir / "front.json"
    if not path.is_file():
        raise RecipeError(f"--level modular: no {path}; run `distill search RECIPE --level "
                          "structural` first (same recipe, same search.output)")
    front = json.loads(path.read_text())["front"]
    if not 0 <= member < len(front):
        raise RecipeError(f"--member {member}: {path} has members 0..{len(front) - 1}")
    return front[member]


def modular_level(recipe: Recipe, out_dir: Path, member: int) -> Level:
    """The modular level around front member ``member`` of the structural search."""
    from .modular import modular_space

    cfg = recipe.search
    row = front_member(level_dir(out_dir, "structural"), member)
    base: Candidate = candidate_from_json(row["candidate"], f"front.json member {member}")
    space = modular_space(base, cfg.modular)
    limits = budget_limits(cfg)
    flops = row["measures"]["flops"] * cfg.modular.flops_ratio
    limits["flops"] = min(flops, limits.get("flops", flops))
    settings = {"level": "modular", "member": base.to_json(), "cost": "flops",
                "space": {k: v for k, v in asdict(space).items() if k != "base"},
                "norm": cfg.modular.norm, **_common_settings(recipe), "budget": limits}
    return Level(name="modular", space=space, seeds=[base], cost="flops", limits=limits,
                 settings=settings, norm=cfg.modular.norm,
                 info={"member": member, "member_key": base.key,
                       "member_flops": row["measures"]["flops"]})


def run_level(recipe: Recipe, level: str, out_dir: Path, member: int | None = None,
              resume: bool = False, progress: bool = True,
              recipe_path: str | Path | None = None) -> dict[str, Any]:
    """Run the ``structural`` or ``modular`` (``member``) level into its folder under
    ``out_dir``; return the summary that ``front.json`` holds, with the files written."""
    if level == "structural":
        spec = structural_level(recipe)
    elif level == "modular":
        if member is None:
            raise RecipeError("--level modular needs --member K (a member of the structural "
                              "search's front.json)")
        spec = modular_level(recipe, out_dir, member)
    else:
        raise RecipeError(f"--level {level!r}; valid: {', '.join(LEVELS)}")
    folder = level_dir(out_dir, level, member)
    evaluator = Evaluator(copy.deepcopy(recipe), spec)
    state = evolve(evaluator, folder, resume=resume, progress=progress)
    return write_results(evaluator, state, folder, recipe_path)
