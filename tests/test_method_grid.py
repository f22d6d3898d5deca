"""The equal-budget grid of distillation methods (benchmarks/method_grid.py, issue 26)."""

import json
import sys
from pathlib import Path

import pytest

from distill.config import load_recipe

# the benchmark's helper lives beside it in benchmarks/ (run as scripts, not a package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from method_grid import best_methods, best_per_method, grid_methods  # noqa: E402
from method_table import aligned, choose_default, gap_closed, grid_matrix, table  # noqa: E402

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
    maps = {"fgd-t4-flat": {"0": 0.10}, "fgd-t16-flat": {"0": 0.12, "1": 0.02},
            "fgd-t32-decay": {"0": 0.11}, "crosskd-t16-flat": {"0": 0.13},
            "crosskd-t32-flat": {"1": 0.2}, "recipe": {"0": 0.5}, "ck16_pred2": {"0": 0.4},
            "fgd-t16-flat+crosskd-t16-flat": {"0": 0.6}}
    # judged on the grid's seed: fgd-t16-flat's weak seed 1 does not demote it, and a point
    # run on another seed only is not compared at all
    assert best_per_method(maps) == {"fgd": ("fgd-t16-flat", 0.12),
                                     "crosskd": ("crosskd-t16-flat", 0.13)}


def test_best_methods_carries_each_best_point_and_the_two_term_combinations():
    grid = grid_methods(("cwd", "fgd", "prediction", "crosskd"), targets=(4.0, 16.0))
    maps = {"cwd-t16-decay": 0.09, "fgd-t16-flat": 0.12, "fgd-t4-flat": 0.08,
            "prediction-t4-flat": 0.07, "crosskd-t16-flat": 0.11, "crosskd-t4-decay": 0.10}
    chosen = best_methods({name: {"0": value} for name, value in maps.items()}, grid)
    assert list(chosen) == [
        "cwd-t16-decay", "fgd-t16-flat", "prediction-t4-flat", "crosskd-t16-flat",
        "fgd-t16-flat+prediction-t4-flat", "fgd-t16-flat+crosskd-t16-flat",
        "prediction-t4-flat+crosskd-t16-flat"]
    assert chosen["fgd-t16-flat+crosskd-t16-flat"] == [*grid["fgd-t16-flat"],
                                                       *grid["crosskd-t16-flat"]]


def _summary(teacher, base, gains):
    """A distill_evidence summary: per method its paired gains over seeds."""
    def spread(values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"mean": mean, "std": std, "n": len(values)}
    return {"teacher": teacher, "baseline": {"mean": base, "std": 0.0, "n": 3},
            "methods": {m: {"map": spread([base + x for x in g]), "gain": spread(g)}
                        for m, g in gains.items()}}


def test_default_is_the_best_mean_gap_or_a_feature_term_within_one_standard_error():
    rows = {"crosskd-t16-flat": grid_methods(("crosskd",))["crosskd-t16-flat"],
            "fgd-t16-flat": grid_methods(("fgd",))["fgd-t16-flat"]}
    # gap 0.1 on both: crosskd closes 60% (se 4.1% over the two), fgd 57%; the spread decides
    noisy = {"a": _summary(0.2, 0.1, {"crosskd-t16-flat": [0.05, 0.06, 0.07],
                                      "fgd-t16-flat": [0.052, 0.057, 0.062]}),
             "b": _summary(0.3, 0.2, {"crosskd-t16-flat": [0.05, 0.06, 0.07],
                                      "fgd-t16-flat": [0.052, 0.057, 0.062]})}
    closed, se = gap_closed(noisy["a"], "crosskd-t16-flat")
    assert abs(closed - 0.6) < 1e-9 and abs(se - 0.01 / 3 ** 0.5 / 0.1) < 1e-9
    assert choose_default(noisy, rows) == "fgd-t16-flat"  # 57% >= 60% - 4.1%
    tight = {k: _summary(s["teacher"], s["baseline"]["mean"],
                         {"crosskd-t16-flat": [0.059, 0.06, 0.061],
                          "fgd-t16-flat": [0.056, 0.057, 0.058]}) for k, s in noisy.items()}
    assert choose_default(tight, rows) == "crosskd-t16-flat"
    tight["b"]["methods"].pop("fgd-t16-flat")  # a row missing on one dataset is not scored
    assert choose_default(tight, rows) == "crosskd-t16-flat"
    tight["b"]["methods"]["fgd-t16-flat"] = {**tight["a"]["methods"]["fgd-t16-flat"],
                                             "gain": {"mean": 0.2, "std": 0.0, "n": 1}}
    assert choose_default(tight, rows) == "crosskd-t16-flat"  # nor one with a single seed


def test_grid_matrix_marks_each_methods_best_point_and_its_gap_closed():
    results = {"summary": {"teacher": 0.2},
               "maps": {"baseline": {"0": 0.1, "1": 0.05}, "fgd-t4-flat": {"0": 0.12},
                        "fgd-t16-decay": {"0": 0.15, "1": 0.0},  # judged on seed 0 only
                        "crosskd-t16-flat": {"0": 0.13}, "crosskd-t32-flat": {"1": 0.19},
                        "fgd-t16-decay+crosskd-t16-flat": {"0": 0.5}}}
    lines = grid_matrix(results).splitlines()
    assert lines[0] == ("| method | 4 flat | 4 decay | 16 flat | 16 decay | best: gap closed |")
    assert lines[2] == "| fgd | 0.1200 |  |  | **0.1500** | 50% |"
    assert lines[3] == "| crosskd |  |  | **0.1300** |  | 30% |"


def test_two_invocations_with_one_label_keep_each_others_runs(tmp_path):
    """distill_evidence rewrites its results file after every run: a second invocation with the
    same label (run beside the first) must not drop the first one's runs, nor they its."""
    from distill_evidence import merge_earlier

    out = tmp_path / "evidence_x.json"
    assert merge_earlier(out, {}, {}) == 0.0  # no file yet
    out.write_text('{"maps": {"baseline": {"0": 0.1}, "fgd-t256-flat": {"0": 0.2}}, '
                   '"terms": {"fgd-t256-flat": [{"kind": "feature"}]}, "wall_seconds": 30}')
    runs = {"baseline": {0: 0.1, 1: 0.15}, "prediction-t16-flat": {0: 0.3}}
    methods = {"prediction-t16-flat": [{"kind": "prediction"}]}
    assert merge_earlier(out, runs, methods) == 30
    assert runs == {"baseline": {0: 0.1, 1: 0.15}, "prediction-t16-flat": {0: 0.3},
                    "fgd-t256-flat": {0: 0.2}}
    assert set(methods) == {"prediction-t16-flat", "fgd-t256-flat"}
    runs["baseline"][0] = 0.12  # this invocation's own value wins over the file's
    merge_earlier(out, runs, methods)
    assert runs["baseline"][0] == 0.12


def test_a_run_in_the_results_file_is_not_trained_again_when_its_folder_is_gone(tmp_path):
    """A new machine has the committed results file but no ``runs/``: the seeds recorded there
    (JSON keys are strings) count as done, the others are still to run."""
    from distill_evidence import merge_earlier, recorded

    out = tmp_path / "evidence_x.json"
    out.write_text('{"maps": {"baseline": {"0": 0.1, "2": 0.3}, "fgd-t16-flat": {"0": 0.2}}}')
    runs: dict = {"baseline": {}}
    merge_earlier(out, runs, {})
    assert recorded(runs, "baseline", 2) == 0.3
    assert recorded(runs, "fgd-t16-flat", 0) == 0.2
    assert recorded(runs, "baseline", 1) is None
    assert recorded(runs, "fgd-t16-flat", 1) is None
    assert recorded(runs, "prediction-t16-flat", 0) is None


def test_runs_made_in_another_environment_are_not_paired_with_runs_made_here(tmp_path):
    """Another CPU or library version trains a seed to another result: such a results file is
    refused (another --tag), one from this environment joins, whatever its thread count."""
    from distill_evidence import environment, environment_mismatch

    here = environment()
    out = tmp_path / "evidence_x.json"
    out.write_text(json.dumps({"machine": {**here, "threads": 7}}))
    assert environment_mismatch(out, here) is None
    out.write_text(json.dumps({"machine": {**here, "pillow": "9.0.0"}}))
    problem = environment_mismatch(out, here)
    assert problem is not None and "pillow '9.0.0' there" in problem and "--tag" in problem
    out.write_text(json.dumps({"machine": {"cpu": "x86_64", "torch": here["torch"]}}))
    assert "cpu_model 'not recorded' there" in environment_mismatch(out, here)
    assert environment_mismatch(tmp_path / "none.json", here) is None


def test_runs_made_with_other_overrides_are_not_merged_into_one_label(tmp_path):
    from distill_evidence import overrides_mismatch

    out = tmp_path / "evidence_x.json"
    assert overrides_mismatch(out, ["trainer.epochs=30"]) is None  # no file yet
    out.write_text('{"maps": {}, "overrides": ["teacher.epochs=90", "trainer.epochs=15"]}')
    assert overrides_mismatch(out, ["trainer.epochs=15", "teacher.epochs=90"]) is None
    message = overrides_mismatch(out, ["teacher.epochs=90", "trainer.epochs=30"])
    assert str(out) in message and "trainer.epochs=30" in message and "--tag" in message


def test_a_method_whose_terms_changed_is_refused_before_it_joins_the_old_runs(tmp_path):
    """A results file's ``recipe`` row made with the old default, extended after the recipe's
    terms changed, would average two methods' seeds (and reuse the old run folders)."""
    from distill_evidence import terms_mismatch

    out = tmp_path / "evidence_x.json"
    old = [{"kind": "crosskd", "weight": {"schedule": "auto", "target": 16.0}}]
    new = [{"kind": "prediction", "weight": {"schedule": "auto", "target": 16.0}}]
    assert terms_mismatch(out, {"recipe": new}, ["recipe"]) is None  # no file yet
    out.write_text(json.dumps({"terms": {"recipe": old, "p16": new}}))
    # same terms (key order and int / float spelling aside): fine; names not in the file: fine
    same = [{"weight": {"target": 16, "schedule": "auto"}, "kind": "prediction"}]
    assert terms_mismatch(out, {"p16": same, "fgd": old}, ["p16", "fgd"]) is None
    problem = terms_mismatch(out, {"recipe": new, "p16": new}, ["recipe", "p16"])
    assert problem is not None and "recipe" in problem and "crosskd" in problem
    assert "p16" not in problem.split("other terms")[0]


def test_a_row_is_found_in_each_file_by_its_terms_whatever_its_name_there():
    ck = [{"kind": "crosskd", "weight": {"schedule": "auto", "target": 16.0}}]
    p16 = [{"kind": "prediction", "weight": {"target": 16.0, "schedule": "auto"}}]
    rows = {"ck16_pred2": ck, "prediction-t16-flat": p16, "fgd-t4-flat": [{"kind": "feature"}]}
    row = {"map": {"mean": 0.4, "std": 0.0, "n": 1}}
    results = {"terms": {"recipe": [{"kind": "crosskd",
                                     "weight": {"target": 16, "schedule": "auto"}}],
                         "prediction-t16-flat": p16, "fgd-t4-flat": [{"kind": "mimic"}]},
               "summary": {"teacher": 0.5, "methods": {"recipe": row,
                                                      "prediction-t16-flat": row}}}
    # the default ran as "recipe" there; a same-named row with other terms is not matched
    assert sorted(aligned(results, rows)["methods"]) == ["ck16_pred2", "prediction-t16-flat"]


def test_a_baselines_only_invocation_keeps_the_teacher_already_in_the_file(tmp_path):
    """Baselines alone load no teacher; rewriting the results file must not erase the teacher's
    mAP another invocation recorded (every gap closed would vanish from the table)."""
    from distill_evidence import earlier_teacher

    out = tmp_path / "evidence_x.json"
    assert earlier_teacher(out) is None  # no file yet
    out.write_text('{"summary": {"teacher": null}, "maps": {"baseline": {"1": 0.04}}}')
    assert earlier_teacher(out) is None
    out.write_text('{"summary": {"teacher": 0.1}, "maps": {"baseline": {"1": 0.04}}}')
    assert earlier_teacher(out) == 0.1


def test_the_table_shows_a_dataset_whose_teacher_is_not_in_yet():
    summaries = {"embedded": {"teacher": 0.2, "baseline": {"mean": 0.1, "std": 0.0, "n": 2},
                              "methods": {}},
                 "aquarium": {"teacher": None, "baseline": {"mean": 0.04, "std": 0.0, "n": 2},
                              "methods": {}}}
    lines = table(summaries, {"p16": [{"kind": "prediction"}]}).splitlines()
    assert lines[2] == "| teacher | 0.2000 | not yet | |"
    assert lines[4] == "| p16 | not run | not run |  |"
