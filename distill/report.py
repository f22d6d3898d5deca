"""The run report: teacher / baseline / distilled figures as ``report.json`` and ``report.md``;
with a teacher chain, also its middle stages and the gap closed by each link."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from distill.evaluation import run_folder_of
from distill.io import write_json_atomic, write_text_atomic
from distill.latency import measure_latencies
from distill.plots import plot_report

STAGES = ("teacher", "baseline", "distilled")

COLUMNS = ("stage", "model", "mAP", "mAP50", "params", "MACs", "CPU latency ms", "train time")
MISSING = "-"


class StageRows(dict):
    """The report's rows by stage, each stage's model kept so that ``time_models`` can time
    them all side by side once the stages are done (one model timed alone right after its
    training meets whatever the machine is still doing then)."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, tuple[nn.Module, Any]] = {}

    def add(self, stage: str, row: dict[str, Any], model: nn.Module) -> None:
        """``row`` (with its ``image_size``) as ``stage``; its ``latency_ms`` comes later."""
        self[stage] = {**row, "latency_ms": None}
        self.models[stage] = (model, row["image_size"])  # int or [h, w]

    def time_models(self, runs: int, channels_last: bool = False) -> None:
        """Fill every row's ``latency_ms``: batch-1 CPU median, the models timed in turn, all
        in one memory format (a trained model comes back channels_last, a fresh one not)."""
        for model, _ in self.models.values():
            model.cpu()  # here, not in add: a teacher still distils on its device until the end
            if hasattr(model, "set_channels_last"):
                model.set_channels_last(channels_last)
        timed = measure_latencies(self.models, runs=runs)
        for stage, result in timed.items():
            self[stage]["latency_ms"] = result["median_ms"]


def _stage_rank(stage: str) -> int:
    if stage in STAGES:
        return 2 * STAGES.index(stage)
    return 1 if stage.startswith("middle") else 2 * len(STAGES)


def ordered_stages(rows: dict[str, dict]) -> list[str]:
    """Stage names of ``rows``: teacher, a chain's ``middle*`` stages (in insertion order),
    baseline, distilled, then any others."""
    return sorted(rows, key=_stage_rank)


def _number(row: dict | None, key: str) -> float | None:
    value = (row or {}).get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def compare_link(
    teacher: dict | None, baseline: dict | None, distilled: dict | None
) -> dict[str, float | None]:
    """One teacher -> student link: ``gain`` (distilled - baseline mAP), ``gap`` (teacher -
    baseline mAP) and ``gap_closed`` (gain / gap); ``None`` where a row or its ``map`` is
    missing, and ``gap_closed`` ``None`` unless the teacher beats the baseline."""
    teacher_map, baseline_map = _number(teacher, "map"), _number(baseline, "map")
    distilled_map = _number(distilled, "map")
    gain = None if distilled_map is None or baseline_map is None else distilled_map - baseline_map
    gap = None if teacher_map is None or baseline_map is None else teacher_map - baseline_map
    closed = gain / gap if gain is not None and gap is not None and gap > 0 else None
    rounded = lambda v: None if v is None else round(v, 6)  # noqa: E731
    return {"gain": rounded(gain), "gap": rounded(gap), "gap_closed": rounded(closed)}


def compare_stages(rows: dict[str, dict]) -> dict[str, float | None]:
    """mAP differences between stages and the share of the teacher-baseline gap closed.

    Every key is present; a figure whose stages (or their ``map``) are missing is ``None``, and
    ``gap_closed`` is ``None`` unless the teacher beats the baseline. With a chain the teacher
    is its first model, so this is the share of that gap the whole chain closed.
    """
    link = compare_link(rows.get("teacher"), rows.get("baseline"), rows.get("distilled"))
    return {
        "distilled_minus_baseline_map": link["gain"],
        "teacher_minus_baseline_map": link["gap"],
        "gap_closed": link["gap_closed"],
    }


def compare_links(rows: dict[str, dict], links: list[dict]) -> list[dict]:
    """A chain's links (``teacher`` / ``student`` / ``baseline`` stage names, ``terms``), each
    with its ``compare_link`` figures."""
    return [{**link, **compare_link(rows.get(link["teacher"]), rows.get(link.get("baseline") or ""),
                                    rows.get(link["student"]))} for link in links]


def format_links(rows: dict[str, dict], links: list[dict]) -> list[str]:
    """Markdown table of a chain's links: who teaches whom, the mAPs, the gap each closes."""
    lines = ["| link | teacher | student | terms | teacher mAP | student alone mAP | "
             "distilled mAP | gain | gap closed |", "|---|---|---|---|" + "---:|" * 5]
    for number, link in enumerate(links, 1):
        names = [f"{stage} ({(rows.get(stage) or {}).get('model', MISSING)})"
                 for stage in (link["teacher"], link["student"])]
        maps = [_fmt_float(_number(rows.get(stage or ""), "map"), 3)
                for stage in (link["teacher"], link.get("baseline"), link["student"])]
        gain = MISSING if link["gain"] is None else f"{link['gain']:+.3f}"
        closed = MISSING if link["gap_closed"] is None else f"{100 * link['gap_closed']:.1f}%"
        cells = [number, *names, ", ".join(link.get("terms") or []) or MISSING, *maps, gain,
                 closed]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


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


PLOT_TITLES = {"tradeoff": "mAP against CPU latency and parameters",
               "per_class_ap": "per-class AP", "curves": "training curves",
               "pr_curves": "precision-recall curves at IoU 0.5"}


def stage_folders(rows: dict[str, dict]) -> dict[str, Path]:
    """Each stage's run folder (its ``metrics.json``, ``history.json``), from its checkpoint."""
    return {stage: run_folder_of(row["checkpoint"]) for stage, row in rows.items()
            if row.get("checkpoint")}


def write_report(
    run_dir: str | os.PathLike, rows: dict[str, dict], extra: dict | None = None
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``run_dir`` (atomically); return both paths.

    ``rows`` maps a stage name to its figures (``model``, ``map``, ``map_50``, ``params``,
    ``macs``, ``latency_ms``, optionally ``map_75``, ``checkpoint``, ``train_seconds``,
    ``image_size``); missing stages and values are allowed. The JSON holds ``stages``, the
    ``extra`` keys and ``comparison`` (``compare_stages``); ``extra["links"]`` (a chain's links,
    ``compare_links``) gets each link's figures and a table of its own.
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
    if extra.get("links"):
        extra["links"] = compare_links(ordered, extra["links"])
    pictures = plot_report(run_dir / "plots", ordered, stage_folders(ordered))
    plots = {name: str(path.relative_to(run_dir)) for name, path in pictures.items()}
    payload = {"stages": ordered, **extra, "comparison": comparison, "plots": plots}
    json_path = write_json_atomic(run_dir / "report.json", payload)

    parts = ["# Distillation report", "", format_report_table(ordered)]
    comparison_lines = format_comparison(comparison)
    if comparison_lines:
        parts += ["", *comparison_lines]
    if plots:
        parts += ["", *[f"![{PLOT_TITLES[name]}]({path})" for name, path in plots.items()]]
    if extra.get("links"):
        parts += ["", "## Chain", "", "Each link: the teacher distils the student with the "
                  "terms shown; gap closed = (distilled - alone) / (teacher - alone).", "",
                  *format_links(ordered, extra["links"])]
    search = extra.get("search")
    if search:
        parts += ["", f"- student backbone searched ({search['candidates']} candidates, "
                      f"{search['seconds']:.0f} s): {search['params'] / 1e6:.2f}M params, "
                      f"{search['macs'] / 1e9:.3f}B MACs, {search['layers']} layers, "
                      f"structure {search['structure']}"]
    md_path = write_text_atomic(run_dir / "report.md", "\n".join(parts) + "\n")
    return json_path, md_path


def log_artifacts(run: Any, rows: dict[str, dict], run_dir: Path, name: str) -> None:
    """The report (json, md, pictures) and the distilled student's checkpoint as W&B artifacts
    of the report run (versioned by W&B; uploaded with the run, or by ``wandb sync``)."""
    import wandb

    report = wandb.Artifact(f"{name}-report", type="report")
    for path in [run_dir / "report.json", run_dir / "report.md",
                 *sorted((run_dir / "plots").glob("*.png"))]:
        if path.is_file():
            report.add_file(str(path), name=str(path.relative_to(run_dir)))
    run.log_artifact(report)
    student = rows.get("distilled", {}).get("checkpoint")
    if student and Path(student).is_file():
        model = wandb.Artifact(f"{name}-student", type="model",
                               metadata={k: rows["distilled"].get(k)
                                         for k in ("model", "map", "params", "macs")})
        model.add_file(student)
        run.log_artifact(model)


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
                     config=config, job_type="report", reinit="finish_previous",
                     group=os.environ.get("DISTILL_WANDB_GROUP") or None)
    pictures = {f"report/{png.stem}": wandb.Image(str(png))
                for png in sorted((Path(run_dir) / "plots").glob("*.png"))}
    run.log({"report": wandb.Table(columns=columns, data=data), **pictures})
    run.summary.update({f"{stage}/{key}": rows[stage].get(key) for stage in rows
                        for key in ("map", "map_50", "latency_ms")})
    run.summary.update({k: v for k, v in compare_stages(rows).items() if v is not None})
    log_artifacts(run, rows, Path(run_dir), name)
    folder = str(getattr(run, "dir", run_dir))
    run.finish()
    return folder
