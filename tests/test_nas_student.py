"""Searched students: structure.json -> backbone -> detector, presets, distillation into one."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from distill_steps import fit_steps
from test_distillation_module import build_module, tiny_recipe

from distill.config import load_recipe
from distill.info import model_info
from distill.models import build_model
from distill.search.presets import structure_presets
from distill.search.space import SearchSpace, load_structure, structure_to_json
from distill.training import prepare_data
from students.nas.backbone import NasBackbone
from students.nas.detector import PRESET_PHI, STRUCTURES_DIR

REPO = Path(__file__).resolve().parents[1]


def write_structure(path, seed: int = 0, mutations: int = 20):
    space = SearchSpace()
    structure = space.initial()
    rng = random.Random(seed)
    for _ in range(mutations):
        structure = space.mutate(structure, rng)
    path.write_text(json.dumps({"blocks": structure_to_json(structure)}))
    return structure


def test_structure_round_trips_into_a_backbone_with_strides_8_16_32(tmp_path):
    structure = write_structure(tmp_path / "structure.json")
    loaded = load_structure(tmp_path / "structure.json")
    assert loaded == structure
    backbone = NasBackbone(loaded, num_extra=0)
    feats = backbone(torch.randn(2, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [16, 8, 4]
    assert [f.shape[1] for f in feats] == backbone.channels
    assert backbone.strides == [8, 16, 32]


def test_searched_student_detector_from_a_structure_file(tmp_path):
    write_structure(tmp_path / "s.json")
    model = build_model("maenas_dm3", num_classes=3, structure=str(tmp_path / "s.json"))
    assert model.strides == [8, 16, 32, 64, 128]
    out = model.eval()(torch.randn(1, 3, 128, 128))
    assert [f.shape[-1] for f in out.features] == [16, 8, 4, 2, 1]
    anchors = 9 * sum(s * s for s in (16, 8, 4, 2, 1))
    assert out.cls_logits.shape == (1, anchors, 3) and out.box_deltas.shape == (1, anchors, 4)
    info = model_info("maenas_dm3", num_classes=3, structure=str(tmp_path / "s.json"))
    assert info["params"] == sum(p.numel() for p in model.parameters())


def test_structure_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="neither a file nor a preset"):
        build_model("maenas_dm3", num_classes=3, structure="no_such_structure")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"blocks": [{"class": "conv", "in": 3, "out": 16, "stride": 2,
                                           "kernel": 3}, {"class": "k9k9", "in": 16, "out": 8,
                                                          "stride": 2, "kernel": 3}]}))
    with pytest.raises(ValueError, match=r"bad.json: blocks\[1\].class: unknown block class"):
        build_model("maenas_dm3", num_classes=3, structure=str(bad))
    write_structure(tmp_path / "s.json")
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_model("maenas_dm3", num_classes=3, structure=str(tmp_path / "s.json"),
                    drop_path_rate=0.2)


def test_presets_are_committed_valid_and_within_their_budget():
    """Every maenas_* preset has a structure searched under its EfficientDet peer's MACs."""
    from distill.search.measure import structure_macs

    assert sorted(PRESET_PHI) == structure_presets()
    for name in PRESET_PHI:
        data = json.loads((STRUCTURES_DIR / f"{name}.json").read_text())
        structure = load_structure(STRUCTURES_DIR / f"{name}.json")
        assert not SearchSpace(**data["space"]).problems(structure)
        assert structure_macs(structure, data["image_size"]) <= data["budget"]["macs"]
        model = build_model(name, num_classes=3)
        assert model.strides == [8, 16, 32, 64, 128]


def test_teacher_distils_into_a_searched_student(tmp_path):
    write_structure(tmp_path / "s.json")
    recipe = tiny_recipe(tmp_path, **{"model.name": "maenas_dm3",
                                      "model.options": "{structure: " + str(tmp_path / "s.json")
                                      + "}",
                                      "distill.weight.schedule": "constant",
                                      "optim.warmup_epochs": "0"})
    data = prepare_data(recipe)
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    module = build_module(recipe, data.class_names)
    assert module.distiller["feature"].strides == [8, 16, 32]
    record = fit_steps(module, batch, 8)
    assert all(math.isfinite(v) for v in record.losses + record.distill)
    assert sum(record.losses[-3:]) / 3 < record.losses[0]
    assert record.distill[-1] < record.distill[0]


def test_distill_run_searches_then_trains_the_searched_student(tmp_path, capsys):
    """`distill.stages: [search, ...]`: the later stages train the structure the search found."""
    from test_distillation_module import tiny_overrides

    from distill.cli import main

    recipe = str(REPO / "recipes" / "search_quickstart.yaml")
    overrides = tiny_overrides(tmp_path, **{"model.name": "maenas_dm3",
                                            "search.candidates": "20",
                                            "search.population": "8",
                                            "search.score": "closed_form"})
    assert main(["run", recipe, *overrides, "distill.stages=[search,baseline]"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    report = json.loads((run_dir / "report.json").read_text())
    structure_file = run_dir / "search" / "structure.json"
    assert report["search"]["structure"] == str(structure_file)
    assert report["search"]["candidates"] == 20
    searched = json.loads(structure_file.read_text())
    assert searched["measures"]["macs"] <= 25237632
    # the baseline trained the searched structure, not the preset's
    saved = load_recipe(run_dir / "recipe.yaml")
    assert saved.model.options["structure"] == str(structure_file)
    model = build_model("maenas_dm3", num_classes=6, structure=str(structure_file))
    assert report["stages"]["baseline"]["params"] == sum(p.numel() for p in model.parameters())
    assert "student backbone searched (20 candidates" in (run_dir / "report.md").read_text()
    blocks = searched["blocks"]
    capsys.readouterr()
    assert main(["run", recipe, *overrides, "distill.stages=[search,baseline]", "resume=true"]) == 0
    assert "(resumed)" in capsys.readouterr().out  # the saved search is read, not redone
    assert json.loads(structure_file.read_text())["blocks"] == blocks
    assert main(["run", recipe, *overrides, "distill.stages=[teacher,search]"]) == 2
