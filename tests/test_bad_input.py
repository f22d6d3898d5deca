"""Bad input stops before training with a message naming the key, file or folder: recipe values,
output folders, checkpoints to resume from (pickled code, truncated, another model)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_distillation_module import REPO, tiny_recipe

from distill.config import RecipeError, load_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


@pytest.mark.parametrize("override, key", [
    ("trainer.epochs=-3", "trainer.epochs"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.val_batch_size=0", "data.val_batch_size"),
    ("data.num_workers=-1", "data.num_workers"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("optim.lr=-0.5", "optim.lr"),
    ("optim.freeze_bn_at=1.5", "optim.freeze_bn_at"),
    ("teacher.epochs=0", "teacher.epochs"),
])
def test_numbers_out_of_range_name_the_key_and_what_was_expected(override, key):
    value = override.split("=")[1]
    with pytest.raises(RecipeError, match=rf"\(\+ command line\): '{key}' is {value}, expected "):
        load_recipe(QUICKSTART, [override])
    good = load_recipe(QUICKSTART, ["trainer.max_steps=-1", "data.val_batch_size=null"])
    assert good.trainer.max_steps == -1 and good.data.val_batch_size is None


def test_teacher_use_is_last_or_best():
    assert load_recipe(QUICKSTART).teacher.use == "last"
    assert load_recipe(QUICKSTART, ["teacher.use=best"]).teacher.use == "best"
    with pytest.raises(RecipeError, match="'teacher.use' is 'final', expected one of last, best"):
        load_recipe(QUICKSTART, ["teacher.use=final"])
