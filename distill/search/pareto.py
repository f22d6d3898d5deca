"""Pareto fronts of (accuracy up, cost down) points, and the front drawn as a PNG."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` = (accuracy, cost) is at least as good as ``b`` in both and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def fronts(items: Sequence[T], point: Callable[[T], tuple[float, float]]) -> list[list[T]]:
    """Non-dominated sorting: the first front (no item dominates its members), then the front of
    the rest, and so on; each front in input order. Equal points share a front."""
    rest = list(items)
    found: list[list[T]] = []
    while rest:
        points = [point(item) for item in rest]
        front = [item for item, p in zip(rest, points)
                 if not any(dominates(q, p) for q in points)]
        found.append(front)
        rest = [item for item in rest if not any(item is f for f in front)]
    return found


def pareto_front(items: Sequence[T], point: Callable[[T], tuple[float, float]]) -> list[T]:
    """The non-dominated items, cheapest first (ties: the more accurate first)."""
    if not items:
        return []
    front = fronts(items, point)[0]
    return sorted(front, key=lambda item: (point(item)[1], -point(item)[0]))


def draw_front(path: Path, points: list[tuple[float, float]], front: list[tuple[float, float]],
               cost_label: str, accuracy_label: str, title: str,
               references: dict[str, tuple[float, float]] | None = None) -> Path | None:
    """Every candidate (grey) and the front (line, numbered from 0) as a PNG at ``path``;
    ``references`` adds named points (e.g. a preset). None, with a message, without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"search: matplotlib is not installed; {path.name} not drawn (front.json has "
              "the numbers)", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if points:
        ax.scatter([p[1] for p in points], [p[0] for p in points], s=14, c="0.7",
                   label=f"candidates ({len(points)})")
    ax.plot([p[1] for p in front], [p[0] for p in front], "o-", c="tab:red",
            label=f"Pareto front ({len(front)})")
    for k, (acc, cost) in enumerate(front):
        ax.annotate(str(k), (cost, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for name, (acc, cost) in (references or {}).items():
        ax.scatter([cost], [acc], marker="*", s=90, label=name)
    ax.set_xlabel(cost_label)
    ax.set_ylabel(accuracy_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
