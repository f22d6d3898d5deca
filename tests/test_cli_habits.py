"""The command line as users expect it: --version, the resolved recipe, exit codes."""

from __future__ import annotations

import pytest
import yaml

import distill
from distill.cli import main
from distill.config import load_recipe, recipe_to_dict


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"distill {distill.__version__}"
    assert distill.__version__ not in ("", "unknown")  # installed: its metadata is found


def test_config_prints_the_resolved_recipe_which_loads_back_the_same(tmp_path, capsys):
    overrides = ["trainer.epochs=3", "data.augment.mosaic=0.5"]
    assert main(["config", "recipes/damo_quickstart.yaml", *overrides]) == 0
    printed = capsys.readouterr().out
    values = yaml.safe_load(printed)
    assert values["trainer"]["epochs"] == 3 and values["model"]["name"] == "damo_yolo_pico"
    assert values["teacher"]["model"]["name"] == "damo_yolo_nm"  # from the recipe, not base
    (tmp_path / "resolved.yaml").write_text(printed)
    expected = recipe_to_dict(load_recipe("recipes/damo_quickstart.yaml", overrides))
    assert recipe_to_dict(load_recipe(tmp_path / "resolved.yaml")) == expected


def test_config_with_a_bad_key_exits_2_naming_it(capsys):
    assert main(["config", "recipes/quickstart.yaml", "trainer.epoch=3"]) == 2
    assert "unknown key 'trainer.epoch'" in capsys.readouterr().err


def test_overrides_after_an_option_are_overrides(tmp_path, capsys):
    # eval reads them: a missing checkpoint is reported after the overrides were accepted
    code = main(["eval", "recipes/quickstart.yaml", "--checkpoint", str(tmp_path / "x.ckpt"),
                 "data.batch_size=4", "trainer.epoch=1"])
    assert code == 2 and "unknown key 'trainer.epoch'" in capsys.readouterr().err


@pytest.mark.parametrize("words,hint", [
    (["--epochs", "3"], "--epochs is not an option of this command; set the recipe key instead: "
                        "trainer.epochs=3"),
    (["--devices=2"], "set the recipe key instead: trainer.devices=2"),
    (["--frobnicate"], "recipe settings are key=value words"),
])
def test_a_flag_from_other_tools_answers_with_the_recipe_key(words, hint, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "recipes/quickstart.yaml", *words])
    assert done.value.code == 2 and hint in capsys.readouterr().err


def test_an_os_error_on_a_users_path_is_one_line_naming_it(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["data", "recipes/quickstart.yaml", f"data.root={blocker / 'data'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err and "Traceback" not in err


def test_eval_from_the_checkpoint_alone_reproduces_the_run_and_lists_classes(tmp_path, capsys):
    import json

    args = ["recipes/quickstart.yaml", f"data.root={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'runs'}", "name=alone", "logger=csv",
            "trainer.progress_bar=false", "data.synthetic.num_train=16",
            "data.synthetic.num_val=8", "data.num_workers=0", "trainer.epochs=1"]
    assert main(["train", *args]) == 0
    run = tmp_path / "runs" / "alone"
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoints" / "last.ckpt"),
                 "--output", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["map"] == pytest.approx(trained["map"], abs=1e-6)
    assert out.splitlines()[1].split() == ["class", "AP"]
    assert all(name in out for name in trained["per_class"])
    # a recipe given as if it were the checkpoint is named
    assert main(["eval", "recipes/quickstart.yaml"]) == 2
    assert "is a recipe: give the checkpoint too" in capsys.readouterr().err
