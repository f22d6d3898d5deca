"""The small-student table of docs/BENCHMARKS.md from the committed evidence results.

    .venv/bin/python benchmarks/student_table.py

Per dataset, for the EfficientDet student and the DAMO-YOLO student: trained alone and distilled
(mean +- sample std over the seeds run, the paired gain over the same seeds, the share of the
teacher-baseline gap closed) with the teacher each was distilled from, and their deployed CPU
latency side by side (``benchmarks/results/student_latency_<size>.json``). Reads only; the
runs are made by ``benchmarks/distill_evidence.py`` (see docs/BENCHMARKS.md for the commands).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# dataset -> rows: (student, image size, results file, distilled method, teacher shown[, a
# note after the student's name])
ROWS = {
    "embedded": [("efficientdet_dm3", 128, "evidence_embedded-try1.json", "ck16_pred", "D0"),
                 ("damo_yolo_pico", 128, "evidence_embedded-damo-nm.json", "ck16", "DAMO-YOLO-Nm",
                  ", CrossKD 16x"),
                 ("damo_yolo_pico", 128, "evidence_embedded-damo-nm.json", "pred16", "DAMO-YOLO-Nm",
                  ", prediction KD 16x")],
    "BCCD": [("efficientdet_dm2", 256, "evidence_bccd.json", "ck16_pred", "D0"),
             ("damo_yolo_tinynet", 256, "evidence_bccd-damo.json", "ck16_pred2", "DAMO-YOLO-Nm",
              ", CrossKD 16x + prediction 2x"),
             ("damo_yolo_tinynet", 256, "evidence_bccd-damo.json", "ck16", "DAMO-YOLO-Nm",
              ", CrossKD 16x"),
             ("damo_yolo_tinynet", 256, "evidence_bccd-damo.json", "prediction-t16-flat",
              "DAMO-YOLO-Nm", ", prediction KD 16x")],
    "Aquarium": [("efficientdet_dm2", 256, "evidence_aquarium.json", "recipe", "D0"),
                 ("damo_yolo_tinynet", 256, "evidence_aquarium-damo.json", None, "DAMO-YOLO-Nm")],
}


def spread(values: list[float]) -> str:
    """``mean +- std (n)``; std 0 for one value."""
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} +- {std:.4f} ({len(values)})"


def row(student: str, size: int, file: str, method: str | None, teacher: str,
        note: str = "") -> str:
    """One table row (missing results: dashes)."""
    path = RESULTS / file
    if not path.is_file():
        return f"| {student} ({size} px){note} | - | - | - | - | - | - |"
    data = json.loads(path.read_text())
    maps = {m: {int(s): v for s, v in seeds.items()} for m, seeds in data["maps"].items()}
    method = method or data["summary"].get("default_method")
    base, dist = maps.get("baseline", {}), maps.get(method, {}) if method else {}
    gains = [dist[s] - base[s] for s in dist if s in base]
    teacher_map = data["summary"].get("teacher")
    gain = f"{statistics.fmean(gains) * 100:+.2f}" if gains else "-"
    if gains and len(gains) > 1:
        gain += f" +- {statistics.stdev(gains) * 100:.2f}"
    gap = (teacher_map - statistics.fmean(base.values())) if base and teacher_map else None
    closed = f"{statistics.fmean(gains) / gap:.0%}" if gains and gap and gap > 0 else "-"
    latency = json.loads((RESULTS / f"student_latency_{size}.json").read_text())
    ms = latency["models"].get(student, {}).get("ms_2t")
    teacher_text = f"{teacher} {teacher_map:.4f}" if teacher_map else "-"
    return (f"| {student} ({size} px){note} | {ms if ms else '-'} | "
            f"{spread(list(base.values()))} | {spread(list(dist.values()))} | {gain} | "
            f"{closed} | {teacher_text} |")


def main() -> None:
    header = ("| student | CPU ms (2 threads) | alone: mAP (seeds) | distilled: mAP (seeds) | "
              "paired gain (points) | gap closed | teacher mAP |\n"
              "|---|---:|---:|---:|---:|---:|---|")
    for dataset, rows in ROWS.items():
        print(f"\n{dataset}\n\n{header}")
        for spec in rows:
            print(row(*spec))


if __name__ == "__main__":
    main()
