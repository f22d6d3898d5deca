"""Class names are compared wherever a checkpoint meets data: eval, a teacher, predict --coco."""

from __future__ import annotations

import json

import pytest
from detector_fixtures import CLASSES, save_module, tiny_module
from test_distillation_module import tiny_recipe

from distill.checkpoints import check_class_names
from distill.errors import RecipeError
from distill.predict import coco_ids
from distill.stages.teacher import load_teacher
from distill.training import evaluate


def test_equal_lists_pass_and_others_are_named_both():
    check_class_names(["a", "b"], ["a", "b"], "x.ckpt", "the data")
    check_class_names(None, ["a", "b"], "x.ckpt", "the data")  # nothing saved to compare
    with pytest.raises(RecipeError, match=r"x.ckpt: trained on the classes \['b', 'a'\], but "
                                          r"the data has \['a', 'b'\] \(the same names in "
                                          r"another order\)"):
        check_class_names(["b", "a"], ["a", "b"], "x.ckpt", "the data")
    with pytest.raises(RecipeError, match=r"\['cat'\], but the data has \['dog'\]; class i"):
        check_class_names(["cat"], ["dog"], "x.ckpt", "the data")


def _reordered_checkpoint(tmp_path):
    module = tiny_module(tmp_path)
    module.hparams["class_names"] = list(reversed(CLASSES))
    return save_module(module, tmp_path / "reordered.ckpt")


def test_eval_refuses_a_checkpoint_of_other_class_order(tmp_path):
    path = _reordered_checkpoint(tmp_path)
    with pytest.raises(RecipeError, match=r"reordered.ckpt: trained on the classes .* but the "
                                          r"recipe's data .* another order"):
        evaluate(tiny_recipe(tmp_path), path)
    assert not list(tmp_path.glob("eval-*.json"))  # nothing written


def test_a_teacher_checkpoint_of_other_classes_is_refused(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"teacher.model.name": "efficientdet_dm3"})
    path = _reordered_checkpoint(tmp_path)
    with pytest.raises(RecipeError, match=r"teacher.checkpoint .*reordered.ckpt: trained on"):
        load_teacher(recipe, len(CLASSES), path, CLASSES)
    load_teacher(recipe, len(CLASSES), path)  # without the data's names: nothing to compare


def test_predict_coco_refuses_categories_of_other_names(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    coco = tmp_path / "ann.json"
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                "categories": categories}))
    assert coco_ids(coco, [image], tmp_path.resolve(), ["cat", "dog"]) == ([1], [3, 7])
    with pytest.raises(RecipeError, match=r"the checkpoint: trained on the classes \['dog', "
                                          r"'cat'\], but --coco .* \(its categories by id\)"):
        coco_ids(coco, [image], tmp_path.resolve(), ["dog", "cat"])
    # an effdet import saves only a count (class_0, class_1): the count is still checked
    assert coco_ids(coco, [image], tmp_path.resolve(), ["class_0", "class_1"])[1] == [3, 7]
    with pytest.raises(RecipeError, match="2 categories, but the checkpoint has 3 classes"):
        coco_ids(coco, [image], tmp_path.resolve(), ["class_0", "class_1", "class_2"])


def test_eval_of_another_models_checkpoint_names_both_models(tmp_path):
    path = save_module(tiny_module(tmp_path), tmp_path / "dm3.ckpt")  # efficientdet_dm3
    recipe = tiny_recipe(tmp_path, **{"model.name": "efficientdet_dm2"})
    with pytest.raises(RecipeError, match=r"dm3.ckpt holds the model efficientdet_dm3 at 128 px, "
                                          r"but the recipe builds efficientdet_dm2; .*"
                                          r"model.name=efficientdet_dm3"):
        evaluate(recipe, path)
