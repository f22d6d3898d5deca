"""The schedule study's table (benchmarks/schedule_table.py, issue 26)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from schedule_table import plot, rows, student_epochs, teacher_curve  # noqa: E402


def _results(epochs, base, distilled, gain):
    return {"overrides": ["teacher.epochs=90", f"trainer.epochs={epochs}"], "summary": {
        "teacher": 0.3, "baseline": {"mean": base, "std": 0.01, "n": 3},
        "methods": {"ck": {"map": {"mean": distilled, "std": 0.02, "n": 3},
                           "gain": {"mean": gain, "std": 0.005, "n": 3}}}}}


def test_rows_give_gain_and_gap_closed_per_schedule(tmp_path):
    files = [_results(15, 0.1, 0.2, 0.1), _results(45, 0.2, 0.25, 0.05),
             {"overrides": [], "summary": {"teacher": 0.3, "baseline": {"mean": 0.1},
                                           "methods": {}}}]  # the method not run: no row
    table = rows(files, "ck")
    assert len(table) == 4
    assert table[2] == ("| 15 | 3 | 0.1000 +- 0.0100 | 0.2000 +- 0.0200 | +10.00 +- 0.50 "
                        "| 50% |")
    assert table[3].endswith("| +5.00 +- 0.50 | 50% |")
    assert student_epochs(files[2]) == "recipe"
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"epochs": [{"epoch": 1, "train/loss": 2.0},
                                              {"epoch": 3, "val/map": 0.1},
                                              {"epoch": 6, "val/map": 0.2}]}))
    curve = teacher_curve(history)
    assert curve == [(3, 0.1), (6, 0.2)]
    plot(curve, files, "ck", tmp_path / "sched.png")
    assert (tmp_path / "sched.png").stat().st_size > 1000
