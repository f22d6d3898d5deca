"""The equal-budget grid of distillation methods (benchmarks/method_grid.py, issue 26)."""

import sys
from pathlib import Path

import pytest

from distill.config import load_recipe

# the benchmark's helper lives beside it in benchmarks/ (run as scripts, not a package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from method_grid import best_per_method, grid_methods  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_grid_gives_every_method_the_same_points_and_each_is_a_valid_recipe():
    grid = grid_methods()
    assert len(grid) == 6 * 3 * 2
    assert grid["fgd-t16-decay"] == [{"kind": "feature", "loss": "fgd", "weight": {
        "schedule": "auto", "target": 16.0, "start": 1.0, "end": 0.1}}]
    assert grid["crosskd-t4-flat"][0]["kind"] == "crosskd"
    assert grid["crosskd-t4-flat"][0]["weight"]["end"] == 1.0
    per_method = {}
    for name in grid:
        per_method.setdefault(name.split("-t")[0], set()).add(name.split("-t")[1])
    assert len({frozenset(points) for points in per_method.values()}) == 1  # same budget
    for name in ("mimic-t32-flat", "prediction-t4-decay", "mgd-t16-flat"):
        recipe = load_recipe(REPO / "recipes" / "quickstart.yaml",
                             [f"distill.terms={grid[name]}".replace("'", "")])
        assert recipe.distill.terms[0]["weight"]["target"] in (4.0, 16.0, 32.0)


def test_grid_refuses_unknown_methods_and_schedules():
    with pytest.raises(ValueError, match="unknown method 'kd'"):
        grid_methods(("kd",))
    with pytest.raises(ValueError, match="unknown schedule"):
        grid_methods(("fgd",), schedules=("step",))


def test_best_per_method_keeps_each_methods_best_point():
    summary = {"methods": {
        "fgd-t4-flat": {"map": {"mean": 0.10}}, "fgd-t16-flat": {"map": {"mean": 0.12}},
        "fgd-t32-decay": {"map": {"mean": 0.11}}, "crosskd-t16-flat": {"map": {"mean": 0.13}},
        "recipe": {"map": {"mean": 0.5}}, "ck16_pred2": {"map": {"mean": 0.4}}}}
    assert best_per_method(summary) == {"fgd": ("fgd-t16-flat", 0.12),
                                        "crosskd": ("crosskd-t16-flat", 0.13)}
