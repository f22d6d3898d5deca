"""distill init: a recipe for your own dataset from the installed package, one per format."""

from __future__ import annotations

import pytest
from data_fixtures import write_voc, write_yolo

from distill.cli import main
from distill.config import load_recipe
from distill.errors import RecipeError
from distill.templates import write_recipe
from distill.training import prepare_data


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_each_format_gets_a_recipe_that_loads(fmt, tmp_path):
    out = write_recipe(fmt, str(tmp_path / "ds"), tmp_path / "mine.yaml")
    recipe = load_recipe(out)
    assert recipe.name == "mine" and recipe.data.format == fmt
    assert recipe.data.root == str(tmp_path / "ds")
    assert recipe.model.name == "damo_yolo_tinynet" and recipe.distill.terms


def test_init_then_data_reads_the_dataset(tmp_path, capsys, monkeypatch):
    voc = write_voc(tmp_path / "voc")
    (voc / "ImageSets" / "Main" / "val.txt").write_text(
        (voc / "ImageSets" / "Main" / "train.txt").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["init", "voc", "voc", "--out", "recipes/cells.yaml"]) == 0
    assert "written: recipes/cells.yaml" in capsys.readouterr().out
    summary = prepare_data(load_recipe(tmp_path / "recipes" / "cells.yaml")).summary()
    assert summary["train"]["objects"] == 3 and summary["class_names"] == ["cat", "dog"]
    yolo = write_yolo(tmp_path / "yolo")
    assert main(["init", "yolo", str(yolo), "--out", "yolo.yaml"]) == 0
    assert prepare_data(load_recipe(tmp_path / "yolo.yaml")).summary()["train"]["images"] == 3


def test_an_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / "r.yaml").write_text("keep me")
    with pytest.raises(RecipeError, match="r.yaml exists"):
        write_recipe("yolo", "ds", tmp_path / "r.yaml")
    assert (tmp_path / "r.yaml").read_text() == "keep me"
