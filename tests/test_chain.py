"""The teacher chain (``distill.chain``): L teaches M, M teaches the student, from one recipe."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_distillation_module import count_term_resolves, tiny_recipe

from distill.checkpoints import read_checkpoint
from distill.errors import RecipeError
from distill.pipeline import check, run

CROSSKD = "[{kind: crosskd, weight: {schedule: constant}}]"
# L: an EfficientDet dm1, M: a dm2 (also trained alone, for its link's gap); the student is a
# searched MAE-NAS backbone: the last link is heterogeneous (tinynet -> residual search space)
CHAIN = ("[{name: efficientdet_dm1, image_size: 128, epochs: 1},"
         " {name: efficientdet_dm2, image_size: 128, epochs: 1, baseline: true}]")


def chain_recipe(tmp_path: Path, chain: str = CHAIN, **extra: str):
    return tiny_recipe(tmp_path, **{"distill.terms": CROSSKD, "distill.chain": chain,
                                    "model.name": "maenas_dm3", "resume": "true", **extra})


def logged_columns(stage_dir: Path) -> set[str]:
    with open(stage_dir / "logs" / "metrics.csv") as handle:
        return set(next(csv.reader(handle)))


def test_chain_distils_every_link_reports_them_and_resumes(tmp_path, capsys, monkeypatch):
    calls = count_term_resolves(monkeypatch)
    out = run(chain_recipe(tmp_path))
    assert len(calls) == 2  # two links (L -> M, M -> student), each resolved once
    run_dir = Path(out["run_dir"])
    report = json.loads((run_dir / "report.json").read_text())
    stages = report["stages"]
    assert list(stages) == ["teacher", "middle1", "middle1_baseline", "baseline", "distilled"]
    assert [stages[s]["model"] for s in stages] == [
        "efficientdet_dm1", "efficientdet_dm2", "efficientdet_dm2", "maenas_dm3", "maenas_dm3"]
    for row in stages.values():
        assert Path(row["checkpoint"]).is_file() and row["params"] > 0 and row["latency_ms"] > 0
        assert (Path(row["checkpoint"]).parent.parent / "metrics.json").is_file()

    # M was distilled from L's checkpoint with the recipe's terms (its distiller trained, kd
    # logged); the student was distilled from M's exported weights
    middle = OmegaConf.load(run_dir / "middle1" / "recipe.yaml")
    assert middle.model.name == "efficientdet_dm2" and middle.distill.chain is None
    assert middle.teacher.model.name == "efficientdet_dm1"
    assert middle.teacher.checkpoint == stages["teacher"]["checkpoint"]
    state = read_checkpoint(run_dir / "middle1" / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(k.startswith("distiller.crosskd.") for k in state)
    assert "train/kd_crosskd" in logged_columns(run_dir / "middle1")
    student = OmegaConf.load(run_dir / "distilled" / "recipe.yaml")
    assert student.teacher.model.name == "efficientdet_dm2"
    assert student.teacher.checkpoint == stages["middle1"]["checkpoint"]
    assert student.teacher.checkpoint == str(run_dir / "middle1" / "checkpoints" / "student.ckpt")
    assert "train/kd_crosskd" in logged_columns(run_dir / "distilled")
    assert "teacher" not in logged_columns(run_dir / "baseline") and not any(
        c.startswith("train/kd_") for c in logged_columns(run_dir / "baseline"))

    links = report["links"]
    assert [(li["teacher"], li["student"], li["baseline"]) for li in links] == [
        ("teacher", "middle1", "middle1_baseline"), ("middle1", "distilled", "baseline")]
    assert all({"gain", "gap", "gap_closed", "terms"} <= set(li) for li in links)
    markdown = (run_dir / "report.md").read_text()
    for stage in stages:
        assert f"| {stage} |" in markdown
    assert "| 1 | teacher (efficientdet_dm1) | middle1 (efficientdet_dm2) | crosskd |" in markdown
    assert "| 2 | middle1 (efficientdet_dm2) | distilled (maenas_dm3) | crosskd |" in markdown

    # resume=true: every finished link is reused, nothing trains again
    capsys.readouterr()
    again = run(chain_recipe(tmp_path))
    printed = capsys.readouterr().out
    assert again["run_dir"] == out["run_dir"] and "Trainer.fit" not in printed
    assert printed.count("is finished") == 3 and printed.count("reusing") == 2
    assert {s: r["map"] for s, r in again["stages"].items()} == {
        s: r["map"] for s, r in stages.items()}


def test_check_shows_every_link_and_stops_on_a_link_its_terms_cannot_pair(tmp_path, capsys):
    # RetinaNet's anchors (aspect 1.414) are not EfficientDet's (1.4): crosskd cannot pair them
    hetero = "[{name: retinanet_tiny, image_size: 128}, {name: efficientdet_dm2, image_size: 128}]"
    recipe = chain_recipe(tmp_path, hetero, **{"model.name": "efficientdet_dm3"})
    with pytest.raises(RecipeError, match=r"distill.chain link 1: retinanet_tiny "
                       r"\(distill.chain\[0\]\) -> efficientdet_dm2 .*anchors.*"
                       r"distill.chain\[0\].terms"):
        run(recipe)
    assert not (tmp_path / "runs").exists()  # stopped before any stage

    # the same link with feature terms: 1x1 aligns 64 -> 32 channels; crosskd on link 2
    feature = ("[{name: retinanet_tiny, image_size: 128, terms: [{kind: feature}]},"
               " {name: efficientdet_dm2, image_size: 128}]")
    capsys.readouterr()
    report = check(chain_recipe(tmp_path, feature, **{"model.name": "efficientdet_dm3"}),
                   batches=1)
    first, second = report["links"]
    assert first["teacher"]["model"] == "retinanet_tiny"
    assert first["student"]["model"] == "efficientdet_dm2"
    (term,) = first["terms"]
    assert term["kind"] == "feature"
    channels = [(r["teacher_channels"], r["student_channels"]) for r in term["levels"]]
    assert channels == [(64, 32)] * 3
    assert second["teacher"]["model"] == "efficientdet_dm2"
    assert second["teacher"]["checkpoint"] is None
    assert [t["kind"] for t in second["terms"]] == ["crosskd"]
    assert report["teacher_at_chance"] is False  # no link's teacher has weights yet
    printed = capsys.readouterr().out
    assert ("== link 1: retinanet_tiny (distill.chain[0]) -> efficientdet_dm2 "
            "(distill.chain[1])") in printed
    assert ("== link 2: efficientdet_dm2 (distill.chain[1]) -> efficientdet_dm3 "
            "(the student)") in printed
    assert "none yet (distill run distils it in link 1)" in printed


@pytest.mark.parametrize("chain, message", [
    ("[efficientdet_dm1, {name: efficientdet_dm2, epoch: 2}]",
     r"distill.chain\[1\].epoch: unknown key. Did you mean 'distill.chain\[1\].epochs'"),
    ("[efficientdet_d9]", r"distill.chain\[0\].name: unknown model 'efficientdet_d9'"),
    ("[{image_size: 128}]", r"distill.chain\[0\].name: missing"),
    ("[{name: efficientdet_dm1, epochs: many}]", r"distill.chain\[0\].epochs: bad value"),
    ("[{name: efficientdet_dm1, epochs: 0}]", r"distill.chain\[0\].epochs: 0"),
    ("[{name: efficientdet_dm1, checkpoint: /nope.ckpt}]",
     r"distill.chain\[0\].checkpoint: file not found"),
    ("[{name: efficientdet_dm1, options: {nope: 1}}]",
     r"distill.chain\[0\] \('efficientdet_dm1'\)"),
    ("[{name: efficientdet_dm1, terms: [{kind: crosskd, bx: 1}]}]",
     r"distill.chain\[0\].terms: distill.terms\[0\]: unknown key"),
    ("[7]", r"distill.chain\[0\]: an entry is a model name or a model spec"),
])
def test_bad_chain_entries_stop_before_the_data(tmp_path, chain, message):
    recipe = chain_recipe(tmp_path, chain, **{"data.root": str(tmp_path / "fresh")})
    with pytest.raises(RecipeError, match=message):
        run(recipe)
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "runs").exists()


def test_chain_replaces_the_teacher_checkpoint(tmp_path):
    recipe = chain_recipe(tmp_path, "[efficientdet_dm1]", **{"teacher.checkpoint": "x.ckpt"})
    with pytest.raises(RecipeError, match=r"give the checkpoint as distill.chain\[0\].checkpoint"):
        run(recipe)


def test_a_chain_whose_first_model_is_the_teacher_shares_its_cache(tmp_path):
    from distill.stages import link_recipe, resolve_chain, teacher_cache_dir

    plain = tiny_recipe(tmp_path)
    spec = ("[{name: efficientdet_dm2, image_size: 128, bn_momentum: 0.1, drop_path_rate: 0.0},"
            " efficientdet_dm1]")  # the quickstart's teacher.model, written out
    recipe = chain_recipe(tmp_path, spec, **{"model.name": "efficientdet_dm3"})
    first, middle = resolve_chain(recipe)
    assert middle.model.name == "efficientdet_dm1" and middle.stage == "middle1"
    link = link_recipe(recipe, first, recipe.model, None)
    assert link.distill.chain is None and link.teacher.model.name == "efficientdet_dm2"
    assert teacher_cache_dir(link) == teacher_cache_dir(plain)
    # the middle trained alone (its baseline) is keyed like a teacher of its own
    assert teacher_cache_dir(link_recipe(recipe, middle, recipe.model, None)).name.startswith(
        "efficientdet_dm1-")


def test_report_orders_the_chain_and_computes_each_link(tmp_path):
    from distill.report import write_report

    rows = {name: {"model": name, "map": value} for name, value in [
        ("distilled", 0.25), ("teacher", 0.5), ("baseline", 0.1), ("middle1", 0.4),
        ("middle1_baseline", 0.3)]}
    links = [{"teacher": "teacher", "student": "middle1", "baseline": "middle1_baseline",
              "terms": ["feature"]},
             {"teacher": "middle1", "student": "distilled", "baseline": "baseline",
              "terms": ["crosskd"]}]
    json_path, md_path = write_report(tmp_path, rows, {"links": links})
    report = json.loads(json_path.read_text())
    assert list(report["stages"]) == ["teacher", "middle1", "middle1_baseline", "baseline",
                                      "distilled"]
    first, second = report["links"]
    assert first["gain"] == pytest.approx(0.1) and first["gap_closed"] == pytest.approx(0.5)
    assert second["gap"] == pytest.approx(0.3) and second["gap_closed"] == pytest.approx(0.5)
    assert report["comparison"]["gap_closed"] == pytest.approx(0.375)  # of L's gap, whole chain
    markdown = md_path.read_text()
    assert ("| 1 | teacher (teacher) | middle1 (middle1) | feature | 0.500 | 0.300 | 0.400 | "
            "+0.100 | 50.0% |") in markdown


def test_a_run_is_a_list_of_stages_and_a_chain_adds_its_middles(tmp_path):
    from distill.pipeline import plan
    from distill.stages import recipe_links

    def names(recipe):
        return [stage.name for stage in plan(recipe, recipe_links(recipe))]

    assert names(tiny_recipe(tmp_path)) == ["teacher", "baseline", "distilled"]
    assert names(tiny_recipe(tmp_path, **{"distill.stages": "[baseline]"})) == ["baseline"]
    assert names(chain_recipe(tmp_path)) == ["teacher", "middle1", "baseline", "distilled"]
    links = recipe_links(chain_recipe(tmp_path))
    assert [(li.number, li.teacher.stage, li.last) for li in links] == [
        (1, "teacher", False), (2, "middle1", True)]
    assert [li.term_names for li in links] == [["crosskd"], ["crosskd"]]


def test_the_teacher_recipe_takes_the_teachers_model_section_whole():
    from distill.config import load_recipe
    from distill.stages import teacher_cache_dir, teacher_recipe

    plain = load_recipe("recipes/quickstart.yaml")
    student_options = load_recipe("recipes/quickstart.yaml",
                                  ["model.options={fpn_channels: 16}"])
    teacher = teacher_recipe(student_options)
    assert teacher.model.name == "efficientdet_d0" and teacher.model.options == {}
    assert teacher_cache_dir(student_options) == teacher_cache_dir(plain)
