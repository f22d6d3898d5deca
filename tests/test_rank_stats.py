"""Rank agreement with bootstrap intervals (benchmarks/rank_stats.py), used by the rank study."""

import random
import sys
from pathlib import Path

import pytest

# the rank study's helper lives beside it in benchmarks/ (run as scripts, not a package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from rank_stats import rank_agreement  # noqa: E402


def test_hand_computed_pair():
    # one swapped neighbour pair of four: Spearman 1 - 6*2 / (4*15) = 0.8; Kendall (5 - 1) / 6
    result = rank_agreement([1, 2, 3, 4], [1, 3, 2, 4], resamples=200)
    assert result["spearman"] == pytest.approx(0.8)
    assert result["kendall"] == pytest.approx(0.667, abs=1e-3)
    assert result["n"] == 4


def test_perfect_and_reversed_orders_have_point_intervals():
    up = rank_agreement(list(range(12)), [0.01 * i for i in range(12)], resamples=300)
    assert up["spearman"] == up["kendall"] == 1.0
    assert up["spearman_ci"] == up["kendall_ci"] == [1.0, 1.0]
    assert up["kendall_p"] < 1e-3
    down = rank_agreement(list(range(12)), [-i for i in range(12)], resamples=300)
    assert down["spearman"] == -1.0 and down["kendall_ci"] == [-1.0, -1.0]


def test_interval_brackets_estimate_and_is_seeded():
    rng = random.Random(3)
    score = [rng.random() for _ in range(12)]
    accuracy = [s + rng.gauss(0, 0.3) for s in score]
    first = rank_agreement(score, accuracy, resamples=500, seed=1)
    assert first == rank_agreement(score, accuracy, resamples=500, seed=1)
    low, high = first["spearman_ci"]
    assert -1.0 <= low < first["spearman"] < high <= 1.0
    assert first["kendall_ci"][0] < first["kendall"] < first["kendall_ci"][1]
    assert 0 < first["resamples"] <= 500


def test_constant_side_ranks_nothing():
    result = rank_agreement([1, 2, 3], [0.0, 0.0, 0.0])
    assert result["spearman"] is None and result["kendall_ci"] is None


@pytest.mark.parametrize("score,accuracy,level", [([1, 2], [1, 2], 0.95),
                                                  ([1, 2, 3], [1, 2], 0.95),
                                                  ([1, 2, 3], [3, 2, 1], 1.5)])
def test_bad_input_is_named(score, accuracy, level):
    with pytest.raises(ValueError, match="rank_agreement"):
        rank_agreement(score, accuracy, level=level)
