"""MAE-NAS evolutionary search (REFERENCE section 3): mutate, filter by budget, score, keep best.

Each step mutates a random member of the population (``random.Random(seed)``); a candidate
already seen, outside the space or over the budget is rejected, the others are scored with a
zero-shot score and inserted; the population is sorted by score (ties: by structure) and cut to
its size. The same settings and seed give the same structure. ``population.json`` (saved every
``checkpoint_every`` candidates, at the end and on Ctrl-C) holds everything the loop needs, so
``resume=True`` continues to exactly the result an uninterrupted run gives.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from distill.config import Recipe
from distill.errors import RecipeError

from .measure import Budget
from .search_state import (
    HISTORY_FORMAT,
    STRUCTURE_FORMAT,
    Member,
    SearchState,
    load_state,
    save_state,
    settings_differences,
    structure_key,
    write_json,
)
from .space import SearchSpace, Structure, load_structure, space_to_json

__all__ = ["SearchResult", "default_latency_path", "load_structure", "run_search",
           "search_settings", "space_from_config"]

MAX_REJECTED_IN_A_ROW = 10_000  # the search stops early (and says so) after this many


@dataclass
class SearchResult:
    """What ``run_search`` found and where it wrote it."""

    structure: Structure
    score: float
    measures: dict[str, Any]
    candidates: int
    rejected: dict[str, int]
    seconds: float
    out_dir: Path
    stalled: bool = False
    files: dict[str, Path] = field(default_factory=dict)


def space_from_config(space_cfg: Any) -> SearchSpace:
    """The ``SearchSpace`` of a recipe's ``search.space`` section (missing keys: defaults)."""
    return SearchSpace.from_config(space_cfg)


def budget_from_config(budget_cfg: Any) -> Budget:
    """The ``Budget`` of a recipe's ``search.budget`` section."""
    def count(value: float | None) -> int | None:
        return None if value is None else int(value)

    return Budget(params=count(budget_cfg.params), macs=count(budget_cfg.macs),
                  layers=count(budget_cfg.layers), latency_ms=budget_cfg.latency_ms)


def current_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``: the device `--profile` measures."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_latency_path(output_dir: str | Path, image_size: int,
                         device: str | None = None) -> Path:
    """``<output_dir>/latency/<device>-<image_size>.json``."""
    return Path(output_dir) / "latency" / f"{device or current_device()}-{image_size}.json"


def search_settings(recipe: Recipe) -> tuple[Any, Path]:
    """A copy of ``recipe.search`` with the latency table resolved (the configured path, else
    the default one when it exists), and the output folder (``search.output``, else
    ``<output_dir>/<name>/search``)."""
    cfg = copy.deepcopy(recipe.search)
    if cfg.latency_table is None:
        default = default_latency_path(recipe.output_dir, cfg.image_size)
        if default.is_file():
            cfg.latency_table = str(default)
    out_dir = Path(cfg.output) if cfg.output else Path(recipe.output_dir) / recipe.name / "search"
    return cfg, out_dir


def _load_table(cfg: Any, space: SearchSpace) -> Any:
    """The latency table ``cfg.latency_table`` names (None when unset), checked against the
    search's image size and space."""
    from .latency import LatencyTable, required_keys, table_key

    hint = "measure one with `distill search RECIPE --profile`"
    if cfg.latency_table is None:
        if cfg.budget.latency_ms is not None:
            raise RecipeError(f"search.budget.latency_ms needs a latency table; {hint} "
                              "(or set search.latency_table)")
        return None
    path = Path(cfg.latency_table)
    if not path.is_file():
        raise RecipeError(f"search.latency_table: file not found: {path}; {hint}")
    table = LatencyTable.load(path)
    problem = ""
    if table.image_size != cfg.image_size:
        problem = (f"{path} was measured at image size {table.image_size}, search.image_size "
                   f"is {cfg.image_size}")
    else:
        missing = [table_key(*key) for key in required_keys(space, cfg.image_size)
                   if table_key(*key) not in table.entries]
        if missing:
            problem = (f"{path} has no entries {missing[:4]} ({len(missing)} missing) for this "
                       "search space")
    if problem and cfg.budget.latency_ms is not None:
        raise RecipeError(f"search.latency_table: {problem}; {hint}")
    if problem:  # only reported, not a budget: search without it
        print(f"distill search: warning: latency not reported: {problem}", file=sys.stderr)
        return None
    return table


def structure_scorer(cfg: Any) -> Callable[[Structure], float]:
    """The score function ``cfg`` (a ``SearchConfig``) names, as the search applies it
    (NaN counts as -inf)."""
    from .score import score

    if cfg.score == "entropy":
        kwargs: dict[str, Any] = {"image_size": cfg.score_image_size, "batch": cfg.score_batch,
                                  "repeats": cfg.repeats, "seed": cfg.seed}
    elif cfg.score == "closed_form":
        kwargs = {}
    else:
        raise RecipeError(f"search.score: {cfg.score!r}, expected entropy or closed_form")
    weights = [float(w) for w in cfg.stage_weights]

    def scorer(structure: Structure) -> float:
        value = score(structure, cfg.score, stage_weights=weights, **kwargs)
        return -math.inf if math.isnan(value) else value

    return scorer


def _settings(cfg: Any, space: SearchSpace, budget: Budget, table: Any) -> dict[str, Any]:
    """Everything that shapes the result: a resume must find the same."""
    from .latency import LatencyTable

    settings: dict[str, Any] = {
        "space": space_to_json(space),
        "budget": {f.name: getattr(budget, f.name) for f in fields(Budget)},
        "image_size": cfg.image_size, "seed": cfg.seed, "score": cfg.score,
        "stage_weights": [float(w) for w in cfg.stage_weights],
        "population": cfg.population, "initial": list(cfg.initial),
        "latency_table": None,
    }
    if cfg.score == "entropy":
        settings.update(score_image_size=cfg.score_image_size, score_batch=cfg.score_batch,
                        repeats=cfg.repeats)
    if isinstance(table, LatencyTable):
        settings["latency_table"] = {"device": table.device, "image_size": table.image_size,
                                     "digest": _table_digest(table)}
    return settings


def _table_digest(table: Any) -> str:
    text = json.dumps(table.to_json(), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _initial(cfg: Any, space: SearchSpace, budget: Budget, table: Any) -> Structure:
    """The starting structure of ``search.initial``; an error names what it breaks."""
    stem, *widths = (int(w) for w in cfg.initial)
    structure = space.initial(stem=stem, widths=tuple(widths), kind=space.block_kinds[0],
                              kernel=space.kernels[0])
    problems = space.problems(structure)
    if problems:
        raise RecipeError(f"search.initial {list(cfg.initial)}: the starting structure is "
                          f"outside the search space: {'; '.join(problems)}")
    over = budget.violations(structure, cfg.image_size, table)
    if over:
        keys = ", ".join(f"search.budget.{line.split()[0]}" for line in over)
        raise RecipeError(f"search.initial {list(cfg.initial)}: the starting structure is "
                          f"already over {keys} ({'; '.join(over)}); give smaller widths in "
                          "search.initial or raise the budget")
    return structure


def run_search(cfg: Any, out_dir: str | Path, resume: bool = False,
               progress: bool = True) -> SearchResult:
    """Evolve ``cfg.candidates`` structures (``cfg``: a ``SearchConfig`` with ``latency_table``
    resolved, see ``search_settings``) and write ``structure.json``, ``history.json`` and
    ``population.json`` into ``out_dir``. ``resume`` continues from ``population.json``."""
    out_dir = Path(out_dir)
    space = space_from_config(cfg.space)
    budget = budget_from_config(cfg.budget)
    table = _load_table(cfg, space)
    settings = _settings(cfg, space, budget, table)
    scorer = structure_scorer(cfg)
    state_path = out_dir / "population.json"

    def member(structure: Structure) -> Member:
        return Member(structure, scorer(structure),
                      budget.measure(structure, cfg.image_size, table), structure_key(structure))

    if resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: no {state_path} to continue from; start the "
                                    "search without --resume")
        state = load_state(state_path)
        differences = settings_differences(state.settings, settings)
        if differences:
            raise RecipeError(f"--resume: {state_path} was written with other settings: "
                              f"{'; '.join(differences)}; resume with the same settings or "
                              "start a new search (without --resume, or another search.output)")
    else:
        start = _initial(cfg, space, budget, table)
        first = member(start)
        state = SearchState(settings=settings, population=[first], seen={first.key},
                            rng=random.Random(cfg.seed))
    out_dir.mkdir(parents=True, exist_ok=True)
    _evolve(cfg, space, budget, table, state, member, state_path, progress)
    return _finish(cfg, space, budget, state, out_dir, state_path)


def _evolve(cfg: Any, space: SearchSpace, budget: Budget, table: Any, state: SearchState,
            member: Callable[[Structure], Member], state_path: Path, progress: bool) -> None:
    """The search loop: until ``cfg.candidates`` structures are scored (or it stalls)."""
    from tqdm.auto import tqdm

    rng = state.rng
    started = time.perf_counter()
    seconds_before = state.seconds
    bar = tqdm(total=cfg.candidates, initial=min(state.evaluated, cfg.candidates),
               disable=not progress, unit="cand", desc="search", dynamic_ncols=True)
    try:
        while state.evaluated < cfg.candidates and not state.stalled:
            before = rng.getstate()
            try:
                parent = rng.choice(state.population)
                child = space.mutate(parent.structure, rng)
                key = structure_key(child)
                if key in state.seen:
                    reason = "duplicate"
                elif space.problems(child):
                    reason = "space"
                elif budget.violations(child, cfg.image_size, table):
                    reason = "budget"
                else:
                    reason = ""
                new = member(child) if not reason else None
            except KeyboardInterrupt:
                rng.setstate(before)  # the interrupted candidate never happened
                raise
            state.seen.add(key)
            state.attempts += 1
            if new is None:
                state.rejected[reason] += 1
                state.rejected_in_a_row += 1
                state.stalled = state.rejected_in_a_row >= MAX_REJECTED_IN_A_ROW
                continue
            state.add(new, cfg.population)
            bar.update(1)
            bar.set_postfix(best=f"{state.population[0].score:.4g}",
                            rejected=sum(state.rejected.values()), refresh=False)
            if state.evaluated % cfg.checkpoint_every == 0:
                state.seconds = seconds_before + time.perf_counter() - started
                save_state(state_path, state)
    except KeyboardInterrupt:
        state.seconds = seconds_before + time.perf_counter() - started
        save_state(state_path, state)
        print(f"\nsearch interrupted; continue with --resume (saved {state_path})",
              file=sys.stderr)
        raise
    finally:
        bar.close()
    state.seconds = seconds_before + time.perf_counter() - started
    if state.stalled:
        print(f"search: stopped after {state.evaluated} candidates: the last "
              f"{MAX_REJECTED_IN_A_ROW} mutations were all rejected (duplicates or over the "
              "budget); the space is exhausted near the population", file=sys.stderr)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finish(cfg: Any, space: SearchSpace, budget: Budget, state: SearchState, out_dir: Path,
            state_path: Path) -> SearchResult:
    """Write population.json, history.json and structure.json; the result."""
    from .space import structure_to_json

    save_state(state_path, state)
    best = state.population[0]
    history = state.history
    history_path = out_dir / "history.json"
    write_json(history_path, {
        "format": HISTORY_FORMAT,
        "candidates": state.evaluated,
        "attempts": state.attempts,
        "rejected": dict(state.rejected),
        "kept": history["kept"].count("1"),
        "stalled": state.stalled,
        "best_score": _finite(best.score),
        "columns": {
            "score": "score of candidate i",
            "best": "best score after candidate i",
            "kept": "1 when candidate i entered the population",
            "tries": "mutations it took to find candidate i (rejected ones + 1)",
        },
        "score": [_finite(round(v, 6)) for v in history["score"]],
        "best": [_finite(round(v, 6)) for v in history["best"]],
        "kept_flags": history["kept"],
        "tries": history["tries"],
    })
    structure_path = out_dir / "structure.json"
    write_json(structure_path, {
        "format": STRUCTURE_FORMAT,
        "blocks": structure_to_json(best.structure),
        "score": _finite(best.score),
        "score_kind": cfg.score,
        "measures": best.measures,
        "image_size": cfg.image_size,
        "budget": {f.name: getattr(budget, f.name) for f in fields(Budget)},
        "space": space_to_json(space),
        "seed": cfg.seed,
        "candidates": state.evaluated,
        "search_seconds": round(state.seconds, 2),
        "latency_table": cfg.latency_table if state.settings["latency_table"] else None,
    })
    return SearchResult(
        structure=best.structure, score=best.score, measures=dict(best.measures),
        candidates=state.evaluated, rejected=dict(state.rejected), seconds=state.seconds,
        out_dir=out_dir, stalled=state.stalled,
        files={"structure": structure_path, "history": history_path, "population": state_path},
    )

