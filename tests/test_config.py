"""Recipe loading: inheritance, overrides, and clear errors for bad keys and values."""

from pathlib import Path

import pytest
import torch

from distill.config import Recipe, load_recipe, recipe_to_dict
from distill.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_typed():
    recipe = load_recipe(None)
    assert isinstance(recipe, Recipe)
    assert recipe.trainer.epochs == 20 and recipe.data.format == "synthetic"
    assert recipe.model.pretrained is False


def test_base_recipe_then_file_then_command_line(tmp_path):
    write(tmp_path / "base.yaml", "name: base\ntrainer:\n  epochs: 3\n  grad_clip: 5.0\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrainer:\n  epochs: 7\n")
    recipe = load_recipe(child, ["data.batch_size=3", "optim.lr=0.5"])
    assert recipe.name == "base"  # inherited
    assert recipe.trainer.epochs == 7  # file beats base
    assert recipe.trainer.grad_clip == 5.0  # untouched base value
    assert recipe.data.batch_size == 3 and recipe.optim.lr == 0.5  # command line beats all


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    path = write(tmp_path / "r.yaml", "data:\n  bach_size: 4\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    text = str(err.value)
    assert str(path) in text and "data.bach_size" in text
    assert "data.batch_size" in text  # the suggestion
    assert "num_workers" in text  # the list of valid keys


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path / "r.yaml", "epochs: 4\n")
    with pytest.raises(RecipeError, match="unknown key 'epochs'.*trainer"):
        load_recipe(path)


def test_unknown_key_on_command_line():
    with pytest.raises(RecipeError, match="command line: unknown key 'trainer.epoch'"):
        load_recipe(None, ["trainer.epoch=3"])


def test_mistyped_value_names_key():
    with pytest.raises(RecipeError, match="trainer.epochs"):
        load_recipe(None, ["trainer.epochs=many"])


def test_mistyped_value_in_file(tmp_path):
    path = write(tmp_path / "r.yaml", "optim:\n  lr: fast\n")
    with pytest.raises(RecipeError, match=r"r\.yaml.*optim\.lr"):
        load_recipe(path)


def test_value_outside_choices():
    with pytest.raises(RecipeError, match="data.format.*coco, voc, yolo"):
        load_recipe(None, ["data.format=pascal"])


def test_mapping_given_for_a_scalar_key(tmp_path):
    path = write(tmp_path / "r.yaml", "trainer:\n  epochs:\n    n: 3\n")
    with pytest.raises(RecipeError, match="trainer.epochs"):
        load_recipe(path)


def test_malformed_override_and_missing_files(tmp_path):
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe(None, ["trainer.epochs"])
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    child = write(tmp_path / "c.yaml", "base: missing.yaml\n")
    with pytest.raises(RecipeError, match="missing.yaml"):
        load_recipe(child)


def test_invalid_yaml_names_file(tmp_path):
    path = write(tmp_path / "r.yaml", "trainer: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_shipped_recipes_load(name):
    recipe = load_recipe(REPO / "recipes" / name)
    assert recipe.model.pretrained is False or name.startswith("coco")
    assert recipe_to_dict(recipe)["model"]["name"] == recipe.model.name


def test_model_backbone_and_options_reach_the_builder_and_typos_stop_early():
    from distill.lightning.detection import build_detector
    from distill.training import check_model

    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml",
        ["teacher.model.name=retinanet", "teacher.model.backbone=resnet18",
         "teacher.model.options={fpn_channels: 64, max_level: 5}"],
    )
    check_model(recipe.teacher.model, "teacher.model")
    with torch.device("meta"):
        teacher = build_detector(recipe_to_dict(recipe)["teacher"]["model"], num_classes=3)
    assert teacher.strides == [8, 16, 32] and teacher.neck_channels == [64, 64, 64]
    typo = load_recipe(REPO / "recipes" / "quickstart.yaml", ["model.options={fpn_chanels: 64}"])
    with pytest.raises(RecipeError, match=r"model \('efficientdet_dm3'\).*fpn_chanels.*fpn_chann"):
        check_model(typo.model)


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("-1", -1), ("2", 2),
                                            ("[0,2]", [0, 2])])
def test_trainer_devices_takes_what_lightning_takes(value, expected):
    from distill.training import device_count

    devices = load_recipe(None, [f"trainer.devices={value}"]).trainer.devices
    assert devices == expected
    assert device_count(devices, "cpu") == {"auto": 1, "-1": 1, "2": 2, "[0,2]": 2}[value]


@pytest.mark.parametrize("value", ["0", "-2", "[0,0]", "[]", "many"])
def test_bad_trainer_devices_are_refused(value):
    with pytest.raises(RecipeError, match=r"'trainer.devices' is .*, expected a count"):
        load_recipe(None, [f"trainer.devices={value}"])
