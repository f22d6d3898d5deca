"""One tuning budget for every distillation method (issue 26): the grid and its best points.

Every method gets the same sweep: the auto-balanced weight at each target (the term held at
``target`` x the detection loss), flat for the whole run or decaying with the cosine to a tenth.
``grid_methods`` writes the grid as ``distill_evidence`` method definitions, named
``<method>-t<target>-<flat|decay>``; ``best_per_method`` reads a results file's summary back
and keeps each method's best point, so every method is compared at its own best.
"""

from __future__ import annotations

import json

FEATURE_LOSSES = ("cwd", "mimic", "fgd", "mgd")
HEAD_TERMS = ("prediction", "crosskd")
METHODS = (*FEATURE_LOSSES, *HEAD_TERMS)
TARGETS = (4.0, 16.0, 32.0)
SCHEDULES = {"flat": 1.0, "decay": 0.1}  # the weight's end, as a share of its start
GRID_SEED = "0"  # the grid runs on this seed; its best points are chosen there


def term(method: str, target: float, end: float) -> dict:
    """One term of ``method`` (a feature loss or a head term) at ``target``, ending at ``end``."""
    weight = {"schedule": "auto", "target": float(target), "start": 1.0, "end": float(end)}
    if method in FEATURE_LOSSES:
        return {"kind": "feature", "loss": method, "weight": weight}
    if method in HEAD_TERMS:
        return {"kind": method, "weight": weight}
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def grid_name(method: str, target: float, schedule: str) -> str:
    """The grid point's method name, e.g. ``fgd-t16-flat``."""
    return f"{method}-t{target:g}-{schedule}"


def grid_methods(methods: tuple[str, ...] = METHODS, targets: tuple[float, ...] = TARGETS,
                 schedules: tuple[str, ...] = tuple(SCHEDULES)) -> dict[str, list[dict]]:
    """Every (method, target, schedule) point as a one-term method definition."""
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise ValueError(f"unknown schedule(s) {unknown}; known: {', '.join(SCHEDULES)}")
    return {grid_name(m, t, s): [term(m, t, SCHEDULES[s])]
            for m in methods for t in targets for s in schedules}


def grid_point(name: str) -> tuple[str, float] | None:
    """A grid point's method and target from its name (``fgd-t16-flat`` -> ("fgd", 16.0)); None
    for any other method name (a combination, ``recipe``, a ``--define``)."""
    method, sep, rest = name.partition("-t")
    if not sep or method not in METHODS or "+" in name:
        return None
    return method, float(rest.split("-")[0])


def canonical_terms(terms: list[dict]) -> str:
    """Terms in one canonical spelling (key order and 16 / 16.0 aside), to compare methods
    across invocations and results files."""
    def canon(value):
        if isinstance(value, dict):
            return {k: canon(v) for k, v in value.items()}
        if isinstance(value, list):
            return [canon(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return json.dumps(canon(terms), sort_keys=True)


def best_per_method(maps: dict[str, dict[str, float]], seed: str = GRID_SEED
                    ) -> dict[str, tuple[str, float]]:
    """For each method of the grid found in a ``distill_evidence`` results file's ``maps`` (per
    method, per seed its mAP): its best point's name and mAP at the grid's seed. Points are
    compared on that one seed, so a point that later got more seeds is not judged on a
    different sample than its neighbours. Ties keep the first (lower target, flat first)."""
    best: dict[str, tuple[str, float]] = {}
    for name, per_seed in maps.items():
        point = grid_point(name)
        if point is None or seed not in per_seed:
            continue
        method = point[0]
        value = float(per_seed[seed])
        if method not in best or value > best[method][1]:
            best[method] = (name, value)
    return best


def best_methods(maps: dict[str, dict[str, float]], terms: dict[str, list[dict]]
                 ) -> dict[str, list[dict]]:
    """The methods the equal-budget table carries to every dataset: each method's best grid
    point (under its grid name) and the two-term combinations of those bests: the best
    neck-feature point with each head term's best, and the two head terms together."""
    best = best_per_method(maps)
    chosen = {name: terms[name] for name, _ in best.values()}
    features = [best[m] for m in FEATURE_LOSSES if m in best]
    heads = [best[m][0] for m in HEAD_TERMS if m in best]
    pairs = [(a, b) for i, a in enumerate(heads) for b in heads[i + 1:]]
    if features:
        top_feature = max(features, key=lambda point: point[1])[0]
        pairs = [(top_feature, head) for head in heads] + pairs
    for a, b in pairs:
        chosen[f"{a}+{b}"] = [*terms[a], *terms[b]]
    return chosen


def has_feature_term(method_terms: list[dict]) -> bool:
    """Whether a method distils neck features (works for any pair with pyramid levels)."""
    return any(term.get("kind", "feature") == "feature" for term in method_terms)
