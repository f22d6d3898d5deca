"""The recipes carry the measured default terms, and `distill check` says how a recipe's terms
stand against them."""

from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.distillation.defaults import MEASURED_DEFAULT, terms_note

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name", ["quickstart", "bccd", "aquarium"])
def test_the_dataset_recipes_carry_the_measured_default(name):
    distill = load_recipe(RECIPES / f"{name}.yaml").distill
    assert [dict(term) for term in distill.terms] == MEASURED_DEFAULT
    note = terms_note(distill)
    assert note.startswith("terms: the measured default") and "57%" in note


def test_other_terms_and_no_terms_are_named_as_such_beside_the_default():
    own = load_recipe(None, ["distill.terms=[{kind: crosskd}]"]).distill
    assert terms_note(own).startswith("terms: the recipe's own")
    bare = load_recipe(None, ["distill.loss=mgd"]).distill
    note = terms_note(bare)
    assert bare.terms is None and "one mgd feature term" in note and "FGD" in note
    # spelled differently (ints, a default left out), the same terms are still the default
    same = load_recipe(None, ["distill.terms=[{kind: feature, loss: fgd, weight: {schedule: auto, "
                              "target: 128, end: 0.1}}, {kind: prediction, weight: "
                              "{schedule: auto, target: 16, end: 1}}]"]).distill
    assert terms_note(same).startswith("terms: the measured default")
