"""The equal-budget method table across datasets, and the default it chooses (issue 26).

    .venv/bin/python benchmarks/method_table.py benchmarks/results/evidence_embedded-grid.json \\
        benchmarks/results/evidence_bccd-best.json benchmarks/results/evidence_aquarium-best.json

The first file is the embedded grid (``distill_evidence.py --grid``): its best point of each
method and their two-term combinations (``method_grid.best_methods``) are the table's rows. Every
file (the grid's own included, as the embedded data's) adds per row its mAP mean +- std, the
paired gain and the share of the teacher-baseline gap closed. A row is found in each file by its
terms, whatever its name there (today's default is ``recipe`` in one file and ``ck16_pred2`` in
another); ``--rows`` adds methods of the grid's file beyond the bests. The default is the row
with the highest mean gap closed over the datasets where every row has run; a row with a
neck-feature term within one standard error of that best is preferred (it works for any pair of
detectors with pyramid levels, where CrossKD and prediction KD need compatible heads).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from method_grid import (
    GRID_SEED,
    METHODS,
    SCHEDULES,
    best_methods,
    canonical_terms,
    grid_name,
    grid_point,
    has_feature_term,
)


def gap_closed(summary: dict, method: str) -> tuple[float, float] | None:
    """A method's gap closed on one dataset and its standard error (from the paired gains'
    spread), or None where it has not run with a paired baseline."""
    row = summary["methods"].get(method)
    teacher, base = summary.get("teacher"), summary.get("baseline")
    if not row or "gain" not in row or teacher is None or not base:
        return None
    gap = teacher - base["mean"]
    if gap <= 0:
        return None
    gain = row["gain"]
    return gain["mean"] / gap, gain["std"] / math.sqrt(gain["n"]) / gap


def mean_gap(summaries: dict[str, dict], method: str) -> tuple[float, float, int] | None:
    """Mean gap closed over the datasets, its standard error, and how many datasets; None
    unless the method has at least 2 paired seeds on every dataset (one seed has no error)."""
    per = [gap_closed(s, method) for s in summaries.values()]
    if any(p is None for p in per) or any(
            s["methods"][method]["gain"]["n"] < 2 for s in summaries.values()):
        return None
    mean = sum(p[0] for p in per) / len(per)
    return mean, math.sqrt(sum(p[1] ** 2 for p in per)) / len(per), len(per)


def choose_default(summaries: dict[str, dict], rows: dict[str, list[dict]]) -> str | None:
    """The best row by mean gap closed, or a neck-feature row within one standard error."""
    scored = {m: g for m in rows if (g := mean_gap(summaries, m)) is not None}
    if not scored:
        return None
    best = max(scored, key=lambda m: scored[m][0])
    mean, se, _ = scored[best]
    near = [m for m in scored if has_feature_term(rows[m]) and scored[m][0] >= mean - se]
    return max(near, key=lambda m: scored[m][0]) if near else best


def aligned(results: dict, rows: dict[str, list[dict]]) -> dict:
    """A results file's summary with its methods renamed to the rows whose terms they ran."""
    by_terms = {canonical_terms(terms): name for name, terms in results.get("terms", {}).items()}
    found = {row: by_terms.get(canonical_terms(terms)) for row, terms in rows.items()}
    methods = results["summary"]["methods"]
    return {**results["summary"], "methods": {row: methods[name] for row, name in found.items()
                                              if name is not None and name in methods}}


def cell(summary: dict, method: str) -> str:
    """One dataset's cell: mAP mean +- std (n), paired gain and gap closed."""
    row = summary["methods"].get(method)
    if not row:
        return "not run"
    m = row["map"]
    text = f"{m['mean']:.4f} +- {m['std']:.4f} ({m['n']})"
    if "gain" in row:
        text += f", {row['gain']['mean'] * 100:+.2f} +- {row['gain']['std'] * 100:.2f}"
    closed = gap_closed(summary, method)
    return text + (f", {closed[0] * 100:.0f}%" if closed else "")


def table(summaries: dict[str, dict], rows: dict[str, list[dict]]) -> str:
    """The Markdown table: per row and dataset mAP / gain / gap closed, then the mean gap."""
    names = list(summaries)
    lines = ["| method | " + " | ".join(f"{n}: mAP (seeds), gain pts, gap" for n in names)
             + " | mean gap closed +- se |", "|---|" + "---:|" * (len(names) + 1)]
    lines.append("| teacher | " + " | ".join(
        "not yet" if s["teacher"] is None else f"{s['teacher']:.4f}" for s in summaries.values())
        + " | |")
    lines.append("| baseline | " + " | ".join(
        f"{s['baseline']['mean']:.4f} +- {s['baseline']['std']:.4f} ({s['baseline']['n']})"
        for s in summaries.values()) + " | |")
    for method in rows:
        g = mean_gap(summaries, method)
        mean = f"{g[0] * 100:.0f}% +- {g[1] * 100:.0f}%" if g else ""
        lines.append(f"| {method} | " + " | ".join(cell(s, method) for s in summaries.values())
                     + f" | {mean} |")
    return "\n".join(lines)


def grid_matrix(results: dict, seed: str = GRID_SEED) -> str:
    """The grid as a Markdown matrix: per method the mAP at each target and schedule on the
    grid's seed (its best in bold), and the best point's gap closed against that seed's
    baseline and the teacher."""
    maps = {name: per_seed[seed] for name, per_seed in results["maps"].items()
            if seed in per_seed}
    targets = sorted({point[1] for name in maps if (point := grid_point(name)) is not None})
    columns = [(t, s) for t in targets for s in SCHEDULES]
    lines = ["| method | " + " | ".join(f"{t:g} {s}" for t, s in columns) + " | best: gap closed |",
             "|---|" + "---:|" * (len(columns) + 1)]
    teacher, base = results["summary"].get("teacher"), maps.get("baseline")
    for method in METHODS:
        points = {c: maps[grid_name(method, *c)] for c in columns if grid_name(method, *c) in maps}
        if not points:
            continue
        best = max(points, key=points.get)
        cells = [("**{:.4f}**" if c == best else "{:.4f}").format(points[c]) if c in points
                 else "" for c in columns]
        closed = ((points[best] - base) / (teacher - base)
                  if teacher is not None and base is not None and teacher > base else None)
        lines.append(f"| {method} | " + " | ".join(cells)
                     + (f" | {closed * 100:.0f}% |" if closed is not None else " | |"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="the embedded grid's results file")
    parser.add_argument("results", type=Path, nargs="*", help="the other datasets' results")
    parser.add_argument("--rows", nargs="*", default=[],
                        help="more rows: methods of the grid's file, e.g. ck16_pred2")
    args = parser.parse_args()
    files = [args.grid, *args.results]
    for path in files:
        if not path.is_file():
            parser.error(f"{path}: no such results file")
    loaded = [json.loads(path.read_text()) for path in files]
    rows = best_methods(loaded[0]["maps"], loaded[0]["terms"])
    unknown = [name for name in args.rows if name not in loaded[0]["terms"]]
    if unknown:
        parser.error(f"--rows {unknown}: not methods of {args.grid}")
    rows.update({name: loaded[0]["terms"][name] for name in args.rows})
    summaries = {data["dataset"]: aligned(data, rows) for data in loaded}
    print(grid_matrix(loaded[0]) + "\n")
    print(table(summaries, rows))
    print(f"\ndefault by mean gap closed: {choose_default(summaries, rows)}")


if __name__ == "__main__":
    main()
