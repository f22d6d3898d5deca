"""SM-NAS search loop (structural and modular levels): evolve candidates that are trained.

Each step proposes a candidate (first the level's seeds, then ``search.random_initial`` random
ones, then children: two parents drawn by binary tournament, crossed over with probability
``search.crossover``, then mutated), rejects it when seen, outside the space or over the budget
(sizes counted first, then the latency measured), and otherwise trains it briefly
(``distill.search.proxy``). The population keeps the best ``search.trained_population`` by
Pareto rank on (accuracy, cost), then accuracy. The state (``population.json``, with every
trained candidate) is saved after each candidate and on Ctrl-C; ``resume`` continues without
training a finished candidate again. The same seed gives the same candidates as long as the
measures agree (a ``macs`` cost and budget are exact; measured latencies vary with the load).
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Recipe
from distill.errors import RecipeError

from .pareto import fronts
from .proxy import ProxyTrainer, latency_ms, size_measures
from .search_state import (
    Codec,
    Member,
    SearchState,
    load_state,
    save_state,
    settings_differences,
)
from .structural import Candidate, candidate_from_json, model_spec


def _decode(data: Any, source: str) -> tuple[Candidate, str]:
    candidate = candidate_from_json(data, source)
    return candidate, candidate.key


CANDIDATES = Codec("distill-smnas-population/1", "candidate", Candidate.to_json, _decode)
MAX_REJECTED_IN_A_ROW = 500  # stop (and say so) after this many rejected proposals in a row


@dataclass
class Level:
    """One trained level: its space (``sample``, ``mutate``, ``crossover``, ``problems``), the
    candidates evaluated first, the cost measure, budget limits per measure, the norm every
    candidate gets, and the settings a resume must find unchanged."""

    name: str
    space: Any
    seeds: list[Candidate]
    cost: str
    limits: dict[str, float]
    settings: dict[str, Any]
    norm: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # written into front.json

    def __post_init__(self) -> None:
        self.settings = json.loads(json.dumps(self.settings))  # as population.json reads back

    def spec(self, candidate: Candidate) -> dict[str, Any]:
        """The candidate's recipe ``model`` section (with the level's norm)."""
        spec = model_spec(candidate)
        if self.norm and self.norm != "bn":
            spec["options"]["norm"] = self.norm
        return spec


def population_order(cost: str) -> Callable[[list[Member]], list[Member]]:
    """Rank members by Pareto front on (score up, ``cost`` down), then score, validation loss
    (short trainings often tie at mAP 0), cost and key."""
    def rank(m: Member) -> tuple[float, float, float, str]:
        loss = m.measures.get("val_loss")
        return -m.score, math.inf if loss is None else loss, m.measures[cost], m.key

    def order(members: list[Member]) -> list[Member]:
        ranked = []
        for front in fronts(members, lambda m: (m.score, m.measures[cost])):
            ranked += sorted(front, key=rank)
        return ranked

    return order


def _tournament(population: list[Member], rng: random.Random) -> Member:
    """The better (earlier-ranked) of two random members."""
    i, j = rng.randrange(len(population)), rng.randrange(len(population))
    return population[min(i, j)]


def propose(level: Level, state: SearchState, cfg: Any, rng: random.Random) -> Candidate:
    """The next candidate: an untried seed, a random one, or a child of two parents."""
    for seed in level.seeds:
        if seed.key not in state.seen:
            return seed
    if state.evaluated < len(level.seeds) + cfg.random_initial or len(state.population) < 2:
        return level.space.sample(rng)
    parent = _tournament(state.population, rng).structure
    if rng.random() < cfg.crossover:
        parent = level.space.crossover(parent, _tournament(state.population, rng).structure, rng)
    return level.space.mutate(parent, rng)


def over_budget(measures: dict[str, Any], limits: dict[str, float]) -> list[str]:
    """One line per measure above its limit."""
    return [f"{key} {measures[key]:.4g} > {limit:.4g}" for key, limit in limits.items()
            if key in measures and measures[key] > limit]


@contextmanager
def quiet_lightning():
    """Lightning's per-fit info lines (devices, tips) off while candidates train."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch",
                                              "lightning_fabric", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


class Evaluator:
    """Measures a candidate (sizes, latency) and trains it; the budget checks in between."""

    def __init__(self, recipe: Recipe, level: Level) -> None:
        cfg = recipe.search
        self.recipe, self.level, self.cfg = recipe, level, cfg
        self.proxy = ProxyTrainer(recipe, cfg.train_steps, cfg.val_batches)
        self.num_classes = self.proxy.num_classes
        self.channels_last = recipe.trainer.channels_last

    def measure(self, spec: dict[str, Any], limits: bool = True
                ) -> tuple[dict[str, Any], list[str]]:
        """Sizes, then (when within those limits, or without ``limits``) the latency; and the
        exceeded limits."""
        measures: dict[str, Any] = size_measures(spec, self.num_classes)
        over = over_budget(measures, self.level.limits) if limits else []
        if not over:
            measures["latency_ms"] = latency_ms(spec, self.num_classes, self.cfg.latency_runs,
                                                self.channels_last)
            over = over_budget(measures, self.level.limits) if limits else []
        return measures, over

    def train(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The proxy training's results."""
        with quiet_lightning():
            return self.proxy(spec)


def start_state(level: Level, out_dir: Path, seed: int, resume: bool) -> SearchState:
    """A fresh state, or (``resume``) the saved one after checking its settings."""
    path = out_dir / "population.json"
    if not resume:
        return SearchState(settings=level.settings, population=[], seen=set(),
                           rng=random.Random(seed), archive=[])
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no {path} to continue from; start the search "
                                "without --resume")
    state = load_state(path, CANDIDATES)
    differences = settings_differences(state.settings, level.settings)
    if differences:
        raise RecipeError(f"--resume: {path} was written with other settings: "
                          f"{'; '.join(differences)}; resume with the same settings or start "
                          "a new search (without --resume, or another search.output)")
    if state.archive is None:
        state.archive = []
    return state


def evolve(evaluator: Evaluator, out_dir: Path, resume: bool = False,
           progress: bool = True) -> SearchState:
    """Run the evaluator's level until ``search.evaluations`` candidates are trained (or it
    stalls); return the state (also in ``out_dir/population.json``)."""
    from tqdm.auto import tqdm

    cfg, level = evaluator.cfg, evaluator.level
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "population.json"
    state = start_state(level, out_dir, cfg.seed, resume)
    state.order = population_order(level.cost)
    rng = state.rng
    started, seconds_before = time.perf_counter(), state.seconds
    bar = tqdm(total=cfg.evaluations, initial=min(state.evaluated, cfg.evaluations),
               disable=not progress, unit="cand", desc=f"search ({level.name})",
               dynamic_ncols=True)

    def save() -> None:
        state.seconds = seconds_before + time.perf_counter() - started
        save_state(path, state, CANDIDATES)

    try:
        while state.evaluated < cfg.evaluations and not state.stalled:
            before = rng.getstate()
            try:
                child = propose(level, state, cfg, rng)
                member, reason = _evaluate(child, level, state, evaluator)
            except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into exit(1)
                rng.setstate(before)  # the interrupted candidate never happened
                raise
            state.seen.add(child.key)
            state.attempts += 1
            if member is None:
                state.rejected[reason] += 1
                state.rejected_in_a_row += 1
                state.stalled = state.rejected_in_a_row >= MAX_REJECTED_IN_A_ROW
                if reason == "budget":
                    save()  # measured: worth keeping
                continue
            state.add(member, cfg.trained_population)
            save()
            bar.update(1)
            bar.set_postfix(best=f"{state.population[0].score:.4f}", refresh=False)
    except (KeyboardInterrupt, SystemExit):
        save()
        print(f"\nsearch interrupted; continue with --resume (saved {path})", file=sys.stderr)
        raise
    finally:
        bar.close()
    save()
    if state.stalled:
        print(f"search: stopped after {state.evaluated} candidates: the last "
              f"{MAX_REJECTED_IN_A_ROW} proposals were all rejected (seen, outside the space or "
              "over the budget)", file=sys.stderr)
    return state


def _evaluate(child: Candidate, level: Level, state: SearchState,
              evaluator: Evaluator) -> tuple[Member | None, str]:
    """The trained member, or None and the reason it was rejected."""
    if child.key in state.seen:
        return None, "duplicate"
    if level.space.problems(child):
        return None, "space"
    spec = level.spec(child)
    started = time.perf_counter()
    measures, over = evaluator.measure(spec)
    if over:
        return None, "budget"
    results = evaluator.train(spec)
    measures.update(results, seconds=round(time.perf_counter() - started, 2))
    score = float(results[evaluator.cfg.metric])
    return Member(child, score, measures, child.key), ""
