"""The report's pictures (PNG, matplotlib): trade-off, per-class AP, training curves, PR curves.

Each function draws from plain numbers (the stages' rows, ``metrics.json`` and ``history.json``)
into one PNG and returns its path, or ``None`` when it has nothing to draw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"teacher": "tab:blue", "baseline": "tab:gray", "distilled": "tab:red"}
MARKS = {"marker": "o", "markersize": 3}  # a run of one epoch is still a visible point
RECALL_POINTS = [i / 100 for i in range(101)]  # COCO's recall thresholds


MANY_CLASSES = 12  # more: per-class AP as horizontal bars, sorted
MAX_PR_PANELS = 12  # PR panels drawn at most


def colour(stage: str, index: int) -> str:
    """The stage's colour: fixed for the three stages, the default cycle for others."""
    return COLOURS.get(stage, f"C{(index + 3) % 10}")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_tradeoff(rows: dict[str, dict], path: Path) -> Path | None:
    """mAP against CPU latency and against parameters, one point per stage (the Pareto view)."""
    points = {s: r for s, r in rows.items() if r.get("map") is not None}
    if not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, key, scale, label in ((axes[0], "latency_ms", 1.0, "CPU latency (ms, batch 1)"),
                                  (axes[1], "params", 1e6, "parameters (M)")):
        for i, (stage, row) in enumerate(points.items()):
            if row.get(key) is None:
                continue
            ax.scatter(float(row[key]) / scale, row["map"], s=60, color=colour(stage, i),
                       zorder=3, label=f"{stage} ({row.get('model', '?')})")
        ax.set_xlabel(label)
        ax.set_ylabel("mAP@[.5:.95]")
        ax.grid(alpha=0.3)
    if axes[0].collections:
        axes[0].legend(fontsize=8)
    fig.suptitle("accuracy against cost")
    return _save(fig, path)


def plot_per_class(per_class: dict[str, dict[str, float | None]], path: Path) -> Path | None:
    """Per class, the AP of each stage (a class without ground truth: no bar): grouped columns
    for a few classes; horizontal bars sorted by the last stage's AP for many (80 COCO classes
    stay readable, one row each)."""
    stages = [s for s, values in per_class.items() if values]
    if not stages:
        return None
    classes = list(per_class[stages[0]])
    if len(classes) > MANY_CLASSES:
        last = per_class[stages[-1]]
        classes.sort(key=lambda c: -1.0 if last.get(c) is None else last[c])
    many = len(classes) > MANY_CLASSES
    width = 0.8 / len(stages)
    size = (7.0, 0.22 * len(classes) * max(1, len(stages) / 2) + 1.5) if many else \
        (max(5.0, 1.1 * len(classes) + 2), 4)
    fig, ax = plt.subplots(figsize=size)
    for i, stage in enumerate(stages):
        values = [per_class[stage].get(c) for c in classes]
        xs = [k + (i - (len(stages) - 1) / 2) * width for k in range(len(classes))]
        bar = ax.barh if many else ax.bar
        bar([x for x, v in zip(xs, values) if v is not None],
            [v for v in values if v is not None], width, label=stage, color=colour(stage, i))
    if many:
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_ylim(-0.6, len(classes) - 0.4)
        ax.set_xlabel("AP@[.5:.95]")
        ax.set_title(f"per-class AP ({len(classes)} classes, by {stages[-1]} AP)")
    else:
        ax.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 6 else 0)
        ax.set_ylabel("AP@[.5:.95]")
        ax.set_title("per-class AP")
    ax.legend()
    ax.grid(axis="x" if many else "y", alpha=0.3)
    return _save(fig, path)


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_curves(histories: dict[str, list[dict]], path: Path) -> Path | None:
    """Per epoch: the detection loss, each distillation term (log scale) and validation mAP."""
    histories = {s: h for s, h in histories.items() if h}
    if not histories:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for i, (stage, records) in enumerate(histories.items()):
        det_key = "train/det_loss" if any("train/det_loss" in r for r in records) else "train/loss"
        axes[0].plot(*_series(records, det_key), color=colour(stage, i), label=stage, **MARKS)
        names = sorted({k[len("train/kd_"):-len("_weight")] for r in records for k in r
                        if k.startswith("train/kd_") and k.endswith("_weight")})
        for j, name in enumerate(names):
            axes[1].plot(*_series(records, f"train/kd_{name}"), color=colour(stage, i),
                         linestyle=("-", "--", ":", "-.")[j % 4], label=f"{stage} {name}",
                         **MARKS)
        axes[2].plot(*_series(records, "val/map"), color=colour(stage, i), label=stage, **MARKS)
        frozen = [r["epoch"] for r in records if r.get("bn_frozen")]
        if frozen:  # the step in the loss there is the switch, not a training problem
            axes[0].axvline(frozen[0] - 0.5, color=colour(stage, i), linestyle=":", alpha=0.7,
                            label=f"{stage}: BatchNorm statistics frozen (optim.freeze_bn_at)")
    titles = ("detection loss (train)", "distillation terms (train, unweighted)",
              "validation mAP@[.5:.95]")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if axes[1].lines:
        axes[1].set_yscale("log")
    return _save(fig, path)


def plot_pr_curves(curves: dict[str, dict[str, list[float] | None]], path: Path) -> Path | None:
    """Per class a panel of precision against recall at IoU 0.5, one line per stage."""
    stages = [s for s, c in curves.items() if c]
    named = dict.fromkeys(c for s in stages for c in curves[s])  # first-seen order
    classes = [c for c in named if any(curves[s].get(c) for s in stages)]
    if not classes:
        return None
    total = len(classes)
    if total > MAX_PR_PANELS:  # the classes whose curves differ most between the stages
        def spread(name: str) -> float:
            means = [sum(v) / len(v) for s in stages if (v := curves[s].get(name))]
            return max(means) - min(means) if means else 0.0

        keep = set(sorted(classes, key=spread, reverse=True)[:MAX_PR_PANELS])
        classes = [c for c in classes if c in keep]
    cols = min(4, len(classes))
    rows = (len(classes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False)
    for k, name in enumerate(classes):
        ax = axes[k // cols][k % cols]
        for i, stage in enumerate(stages):
            values = curves[stage].get(name)
            if values:
                ax.plot(RECALL_POINTS, values, color=colour(stage, i), label=stage)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
    for k in range(len(classes), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("precision-recall at IoU 0.5" + (
        f": the {len(classes)} of {total} classes where the stages differ most"
        if total > len(classes) else ""))
    return _save(fig, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def plot_report(
    out_dir: Path, rows: dict[str, dict], stage_dirs: dict[str, Path]
) -> dict[str, Path]:
    """All report pictures into ``out_dir``: rows give the trade-off; each stage's run folder
    (``metrics.json``, ``history.json``) the per-class AP, curves and PR curves. Returns the
    files written by name."""
    metrics = {s: _read_json(Path(d) / "metrics.json") for s, d in stage_dirs.items()}
    histories = {s: _read_json(Path(d) / "history.json").get("epochs", [])
                 for s, d in stage_dirs.items()}
    drawn = {
        "tradeoff": plot_tradeoff(rows, out_dir / "tradeoff.png"),
        "per_class_ap": plot_per_class({s: m.get("per_class") or {} for s, m in metrics.items()},
                                       out_dir / "per_class_ap.png"),
        "curves": plot_curves(histories, out_dir / "curves.png"),
        "pr_curves": plot_pr_curves({s: m.get("pr_50") or {} for s, m in metrics.items()},
                                    out_dir / "pr_curves.png"),
    }
    return {name: path for name, path in drawn.items() if path is not None}
