"""Non-finite numbers stop loudly: in a recipe before anything runs, in a loss at its step."""

from __future__ import annotations

import json
import re

import pytest

from distill.cli import main
from distill.config import load_recipe
from distill.errors import RecipeError


@pytest.mark.parametrize("override,key", [
    ("optim.lr=inf", "'optim.lr' is inf"),
    ("distill.weight.end=nan", "'distill.weight.end' is nan"),
    ("data.augment.scale_range=[0.5,-.inf]", "'data.augment.scale_range[1]' is -inf"),
])
def test_a_non_finite_setting_is_refused_naming_its_key(override, key):
    with pytest.raises(RecipeError, match=re.escape(f"{key}, expected a finite number")):
        load_recipe(None, [override])


def test_a_run_whose_loss_turns_nan_stops_non_zero_naming_the_step(tmp_path, capsys):
    code = main(["train", "recipes/quickstart.yaml", f"data.root={tmp_path / 'data'}",
                 f"output_dir={tmp_path / 'runs'}", "name=nan", "logger=csv",
                 "trainer.progress_bar=false", "data.synthetic.num_train=16",
                 "data.synthetic.num_val=4", "data.num_workers=0", "trainer.epochs=3",
                 "optim.lr=1e30", "optim.warmup_epochs=0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "the training loss is nan" in err and "step 2 (epoch 2" in err
    last = tmp_path / "runs" / "nan" / "checkpoints" / "last.ckpt"
    assert f"checkpoint written before this step: {last}" in err and last.is_file()
    assert not (tmp_path / "runs" / "nan" / "metrics.json").exists()  # not a finished run

    def strict(constant: str):
        raise ValueError(f"{constant} in history.json")

    history = json.loads((tmp_path / "runs" / "nan" / "history.json").read_text(),
                         parse_constant=strict)
    assert [row["epoch"] for row in history["epochs"]] == [1]


@pytest.mark.parametrize("override,expected", [
    ("trainer.limit_val_batches=0", "'trainer.limit_val_batches' is 0.0, expected a fraction"),
    ("trainer.limit_val_batches=2.5", "'trainer.limit_val_batches' is 2.5, expected a fraction"),
    ("data.augment.hflip=1.5", "'data.augment.hflip' is 1.5, expected a probability in [0, 1]"),
    ("data.augment.mosaic=-1", "'data.augment.mosaic' is -1.0, expected a probability"),
    ("data.augment.color_jitter=-0.1", "'data.augment.color_jitter' is -0.1, expected >= 0"),
])
def test_values_that_reach_torch_are_checked_naming_the_key(override, expected):
    with pytest.raises(RecipeError, match=re.escape(expected)):
        load_recipe(None, [override])
    load_recipe(None, ["trainer.limit_val_batches=3", "data.augment.mosaic=0.5"])  # valid ones


@pytest.mark.parametrize("overrides,expected", [
    (["model.image_size=-128"], "'model.image_size' is -128, expected a positive number"),
    (["data.batch_size=1"], "'data.batch_size' is 1, expected at least 2: BatchNorm"),
    (["logger=tensorboard"], "'logger' is tensorboard, but the tensorboard package"),
])
def test_settings_torch_or_the_logger_would_fail_on_stop_at_load(overrides, expected):
    import importlib.util

    if overrides == ["logger=tensorboard"] and importlib.util.find_spec("tensorboard"):
        pytest.skip("tensorboard is installed here")
    with pytest.raises(RecipeError, match=re.escape(expected)):
        load_recipe(None, overrides)
    load_recipe(None, ["data.batch_size=1", "model.options={norm: gn_ws}"])  # no BatchNorm
