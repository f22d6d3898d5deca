"""The `distill` command line: info output and early, clear errors (no training here)."""

import json

import pytest

from distill.cli import main


def test_info_json_for_d0(capsys):
    assert main(["info", "efficientdet_d0", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_size"] == [512, 512]
    assert abs(info["params"] - 3.9e6) / 3.9e6 < 0.02
    assert abs(info["macs"] - 2.5e9) / 2.5e9 < 0.05


def test_info_respects_classes_and_size(capsys):
    assert (
        main(["info", "efficientdet_dm3", "--num-classes", "3", "--image-size", "256", "--json"])
        == 0
    )
    small = json.loads(capsys.readouterr().out)
    assert main(["info", "efficientdet_dm3", "--num-classes", "90", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert small["image_size"] == [256, 256] and default["image_size"] == [128, 128]
    assert small["params"] < default["params"]  # fewer classes, smaller class head
    assert small["macs"] > default["macs"]  # 4x the pixels


def test_info_table_lists_every_model(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("efficientdet_d0", "efficientdet_d7", "efficientdet_dm3"):
        assert name in out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["info", "efficientdet_d9"]) == 2
    err = capsys.readouterr().err
    assert "efficientdet_d9" in err and "efficientdet_d0" in err


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.epoch=3", "unknown key 'trainer.epoch'"),
        ("model.name=resnet_nope", "unknown model 'resnet_nope'"),
        ("model.image_size=300", "not a multiple of 128"),
        ("data.format=csv", "data.format"),
    ],
)
def test_train_stops_before_work_on_bad_recipe(tmp_path, capsys, override, expected):
    code = main(["train", "recipes/quickstart.yaml", f"output_dir={tmp_path}", override])
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run folder was started


def test_eval_rejects_a_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    assert main(["eval", "recipes/quickstart.yaml", "--checkpoint", str(missing)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_bad_dataset_stops_before_training(tmp_path, capsys):
    (tmp_path / "ann.json").write_text("{not json")
    code = main(
        [
            "train",
            "recipes/quickstart.yaml",
            "data.format=coco",
            f"data.root={tmp_path}",
            "data.train=ann.json",
            "data.val=ann.json",
            f"output_dir={tmp_path / 'runs'}",
        ]
    )
    assert code == 2
    assert "ann.json" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_info_lists_the_distillation_registries(capsys):
    assert main(["info", "--distill"]) == 0
    out = capsys.readouterr().out
    assert "term kinds (distill.terms[].kind): crosskd, feature, localization, prediction" in out
    assert "feature losses (feature terms' loss): cwd, fgd, mgd, mimic" in out
