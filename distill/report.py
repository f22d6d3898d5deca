"""The run report: teacher / baseline / distilled figures as ``report.json`` and ``report.md``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distill.evaluation import write_json_atomic, write_text_atomic

STAGES = ("teacher", "baseline", "distilled")

COLUMNS = ("stage", "model", "mAP", "mAP50", "params", "MACs", "CPU latency ms", "train time")
MISSING = "-"


def ordered_stages(rows: dict[str, dict]) -> list[str]:
    """Stage names of ``rows``: the known ``STAGES`` first (in order), then any others."""
    return [s for s in STAGES if s in rows] + [s for s in rows if s not in STAGES]


def _number(row: dict | None, key: str) -> float | None:
    value = (row or {}).get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def compare_stages(rows: dict[str, dict]) -> dict[str, float | None]:
    """mAP differences between stages and the share of the teacher-baseline gap closed.

    Every key is present; a figure whose stages (or their ``map``) are missing is ``None``, and
    ``gap_closed`` is ``None`` unless the teacher beats the baseline.
    """
    teacher = _number(rows.get("teacher"), "map")
    baseline = _number(rows.get("baseline"), "map")
    distilled = _number(rows.get("distilled"), "map")
    gain = None if distilled is None or baseline is None else distilled - baseline
    gap = None if teacher is None or baseline is None else teacher - baseline
    closed = gain / gap if gain is not None and gap is not None and gap > 0 else None
    return {
        "distilled_minus_baseline_map": None if gain is None else round(gain, 6),
        "teacher_minus_baseline_map": None if gap is None else round(gap, 6),
        "gap_closed": None if closed is None else round(closed, 6),
    }


def _fmt_scaled(value: float | None, divisor: float, suffix: str) -> str:
    return MISSING if value is None else f"{value / divisor:.2f}{suffix}"


def _fmt_float(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def format_duration(seconds: float | None) -> str:
    """``45s``, ``12m05s`` or ``1h02m``; ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return MISSING
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{(total % 3600) // 60:02d}m"


def _cell(text: Any) -> str:
    text = MISSING if text is None or text == "" else str(text)
    return text.replace("|", "\\|").replace("\n", " ")


def format_report_table(rows: dict[str, dict]) -> str:
    """Markdown table, one row per stage; params in millions, MACs in billions, ``-`` if missing."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|",
    ]
    for stage in ordered_stages(rows):
        row = rows[stage] or {}
        cells = [
            stage,
            row.get("model"),
            _fmt_float(_number(row, "map"), 3),
            _fmt_float(_number(row, "map_50"), 3),
            _fmt_scaled(_number(row, "params"), 1e6, "M"),
            _fmt_scaled(_number(row, "macs"), 1e9, "B"),
            _fmt_float(_number(row, "latency_ms"), 1),
            format_duration(_number(row, "train_seconds")),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def format_comparison(comparison: dict[str, float | None]) -> list[str]:
    """Markdown bullet lines for the computable comparison figures."""
    lines = []
    gain = comparison.get("distilled_minus_baseline_map")
    gap = comparison.get("teacher_minus_baseline_map")
    closed = comparison.get("gap_closed")
    if gain is not None:
        lines.append(f"- distilled - baseline mAP: {gain:+.3f}")
    if gap is not None:
        lines.append(f"- teacher - baseline mAP: {gap:+.3f}")
    if closed is not None:
        lines.append(f"- teacher-baseline gap closed by distillation: {100 * closed:.1f}%")
    return lines


def write_report(
    run_dir: str | os.PathLike, rows: dict[str, dict], extra: dict | None = None
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``run_dir`` (atomically); return both paths.

    ``rows`` maps a stage name to its figures (``model``, ``map``, ``map_50``, ``params``,
    ``macs``, ``latency_ms``, optionally ``map_75``, ``checkpoint``, ``train_seconds``,
    ``image_size``); missing stages and values are allowed. The JSON holds ``stages``, the
    ``extra`` keys and ``comparison`` (``compare_stages``).
    """
    if not isinstance(rows, dict) or not all(isinstance(r, dict) for r in rows.values()):
        raise ValueError("rows must map stage names to dicts")
    extra = dict(extra or {})
    clash = {"stages", "comparison"} & set(extra)
    if clash:
        raise ValueError(f"extra must not set the reserved keys {sorted(clash)}")
    run_dir = Path(run_dir)
    ordered = {stage: rows[stage] for stage in ordered_stages(rows)}
    comparison = compare_stages(ordered)
    payload = {"stages": ordered, **extra, "comparison": comparison}
    json_path = write_json_atomic(run_dir / "report.json", payload)

    parts = ["# Distillation report", "", format_report_table(ordered)]
    comparison_lines = format_comparison(comparison)
    if comparison_lines:
        parts += ["", *comparison_lines]
    search = extra.get("search")
    if search:
        parts += ["", f"- student backbone searched ({search['candidates']} candidates, "
                      f"{search['seconds']:.0f} s): {search['params'] / 1e6:.2f}M params, "
                      f"{search['macs'] / 1e9:.3f}B MACs, {search['layers']} layers, "
                      f"structure {search['structure']}"]
    md_path = write_text_atomic(run_dir / "report.md", "\n".join(parts) + "\n")
    return json_path, md_path


def log_report_to_wandb(
    rows: dict[str, dict], run_dir: Path, project: str, name: str, mode: str, config: dict
) -> str:
    """Log the report as a W&B table (plus summary figures) in a run of its own; its folder.

    Each stage's training run already holds its recipe and validation images; this run holds
    the comparison. ``mode`` is ``offline`` (default: no account needed), ``online``,
    ``disabled``.
    """
    import wandb

    columns = ["stage", "model", "map", "map_50", "params", "macs", "latency_ms"]
    data = [[stage, *[rows[stage].get(c) for c in columns[1:]]] for stage in ordered_stages(rows)]
    run = wandb.init(project=project, name=f"{name}:report", dir=str(run_dir), mode=mode,
                     config=config, job_type="report", reinit="finish_previous")
    run.log({"report": wandb.Table(columns=columns, data=data)})
    run.summary.update({f"{stage}/{key}": rows[stage].get(key) for stage in rows
                        for key in ("map", "map_50", "latency_ms")})
    run.summary.update({k: v for k, v in compare_stages(rows).items() if v is not None})
    folder = str(getattr(run, "dir", run_dir))
    run.finish()
    return folder
