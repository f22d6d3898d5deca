"""Relative input paths in a recipe file are read beside that file (as ``base:`` is)."""

from __future__ import annotations

from pathlib import Path

from distill.config import load_recipe


def test_input_paths_resolve_beside_their_recipe_file_from_any_folder(tmp_path, monkeypatch):
    (tmp_path / "datasets" / "cells").mkdir(parents=True)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "teacher.ckpt").write_text("x")
    (tmp_path / "recipes" / "shared").mkdir(parents=True)
    (tmp_path / "recipes" / "shared" / "base.yaml").write_text(
        "teacher:\n  checkpoint: ../../weights/teacher.ckpt\n")
    recipe = tmp_path / "recipes" / "cells.yaml"
    recipe.write_text("base: shared/base.yaml\ndata:\n  format: voc\n  root: ../datasets/cells\n"
                      "output_dir: runs\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_recipe(Path("..") / "recipes" / "cells.yaml")
    assert loaded.data.root == str(tmp_path / "datasets" / "cells")
    assert loaded.teacher.checkpoint == str(tmp_path / "weights" / "teacher.ckpt")  # base's own
    assert loaded.output_dir == "runs"  # an output: relative to the current folder


def test_paths_that_do_not_exist_beside_the_recipe_and_overrides_stay_as_written(tmp_path,
                                                                                 monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  root: data/shapes-128\n")  # generated on first use
    monkeypatch.chdir(tmp_path.parent)
    assert load_recipe(recipe).data.root == "data/shapes-128"
    (tmp_path / "mine").mkdir()
    assert load_recipe(recipe, ["data.root=mine"]).data.root == "mine"  # the user's own cwd


def test_an_env_default_is_resolved_beside_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("data:\n  root: ${oc.env:MY_TEST_ROOT,../ds}\n")
    monkeypatch.delenv("MY_TEST_ROOT", raising=False)
    assert load_recipe(recipe).data.root == str(tmp_path / "ds")
    monkeypatch.setenv("MY_TEST_ROOT", "/absolute/elsewhere")
    assert load_recipe(recipe).data.root == "/absolute/elsewhere"
