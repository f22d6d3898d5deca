"""The schedule study (issue 26): does distillation only speed training up, or raise where the
student ends? One teacher trained to its plateau, the baseline and the default at 1x, 2x, 3x
the student epochs.

    .venv/bin/python benchmarks/schedule_table.py --method ck16_pred2 \\
        --teacher runs/teachers/efficientdet_d0-<digest>/history.json \\
        benchmarks/results/evidence_embedded-sched-1x.json ... -3x.json [--plot sched.png]

Each results file is one ``distill_evidence.py`` invocation with its own ``trainer.epochs``
(read from its overrides); the table gives per schedule the baseline and the distilled mAP
(mean +- std over the seeds), the paired gain and the share of the teacher-baseline gap closed;
the teacher's validation curve shows where it plateaus.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from method_table import gap_closed


def student_epochs(results: dict) -> str:
    """The student epochs a results file ran at (its ``trainer.epochs`` override)."""
    for item in results.get("overrides", []):
        key, _, value = item.partition("=")
        if key == "trainer.epochs":
            return value
    return "recipe"


def teacher_curve(history: Path) -> list[tuple[int, float]]:
    """(epoch, val mAP) of each validated epoch in a ``history.json``."""
    epochs = json.loads(history.read_text())["epochs"]
    return [(int(e["epoch"]), float(e["val/map"])) for e in epochs if "val/map" in e]


def rows(files: list[dict], method: str) -> list[str]:
    """One Markdown row per schedule."""
    lines = ["| student epochs | seeds | baseline | distilled | paired gain (pts) | gap closed |",
             "|---:|---:|---:|---:|---:|---:|"]
    for results in files:
        summary = results["summary"]
        base, row = summary["baseline"], summary["methods"].get(method)
        if row is None or "gain" not in row:
            continue
        gain, closed = row["gain"], gap_closed(summary, method)
        share = f"{closed[0] * 100:.0f}%" if closed else ""
        lines.append(
            f"| {student_epochs(results)} | {gain['n']} | {base['mean']:.4f} +- {base['std']:.4f} "
            f"| {row['map']['mean']:.4f} +- {row['map']['std']:.4f} | {gain['mean'] * 100:+.2f} "
            f"+- {gain['std'] * 100:.2f} | {share} |")
    return lines


def plot(curve: list[tuple[int, float]], files: list[dict], method: str, path: Path) -> None:
    """The teacher's curve and each schedule's final baseline / distilled mAP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*curve), "k-", label="teacher (validation curve)")
    for results in files:
        epochs, summary = student_epochs(results), results["summary"]
        if not epochs.isdigit() or method not in summary["methods"]:
            continue
        ax.plot(int(epochs), summary["baseline"]["mean"], "bo")
        ax.plot(int(epochs), summary["methods"][method]["map"]["mean"], "r^")
    ax.plot([], [], "bo", label="baseline student (end of run)")
    ax.plot([], [], "r^", label=f"distilled student, {method}")
    ax.set_xlabel("epochs")
    ax.set_ylabel("val mAP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--method", required=True, help="the distilled method's name")
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's history.json")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    for path in [*args.results, args.teacher]:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    files = [json.loads(path.read_text()) for path in args.results]
    curve = teacher_curve(args.teacher)
    print("\n".join(rows(files, args.method)))
    print("\nteacher: " + ", ".join(f"{e}: {m:.3f}" for e, m in curve))
    if args.plot:
        plot(curve, files, args.method, args.plot)
        print(f"written: {args.plot}")


if __name__ == "__main__":
    main()
