"""The detector checkpoint schema: written and read in ``distill.checkpoints`` only."""

from __future__ import annotations

import pytest
import torch

from distill.checkpoints import read_detector_checkpoint, write_detector_checkpoint
from distill.errors import RecipeError


def test_a_written_detector_checkpoint_reads_back(tmp_path):
    state = {"conv.weight": torch.arange(6.0).reshape(2, 3),
             "bn.num_batches_tracked": torch.tensor(3)}
    hparams = {"recipe": {"model": {"name": "efficientdet_dm2"}, "seed": 1},
               "class_names": ["cat", "dog"]}
    path = write_detector_checkpoint(tmp_path / "sub" / "student.ckpt", state, hparams)
    raw = torch.load(path, weights_only=True)
    assert sorted(raw["state_dict"]) == ["model.bn.num_batches_tracked", "model.conv.weight"]
    assert raw["hyper_parameters"] == hparams
    checkpoint = read_detector_checkpoint(path)
    assert checkpoint.model == {"name": "efficientdet_dm2"}
    assert checkpoint.class_names == ["cat", "dog"]
    assert checkpoint.state.keys() == state.keys()
    assert torch.equal(checkpoint.state["conv.weight"], state["conv.weight"])
    assert [p.name for p in path.parent.iterdir()] == ["student.ckpt"]  # no temporary left


def test_an_import_checkpoint_names_its_classes_and_distiller_keys_are_dropped(tmp_path):
    path = tmp_path / "stage.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(1), "distiller.align.w": torch.ones(2)},
                "hyper_parameters": {"model": {"name": "tf_efficientdet_d0"}, "num_classes": 3}},
               path)
    checkpoint = read_detector_checkpoint(path)
    assert checkpoint.model == {"name": "tf_efficientdet_d0"}
    assert checkpoint.class_names == ["class_0", "class_1", "class_2"]
    assert list(checkpoint.state) == ["w"]


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path):
    path = tmp_path / "bad.ckpt"
    with pytest.raises(RecipeError, match="not a detector checkpoint"):
        write_detector_checkpoint(path, {"w": torch.ones(1)}, {"recipe": {"model": {}}})
    assert not path.exists()
    torch.save({"state_dict": {"w": torch.ones(1)},
                "hyper_parameters": {"model": {"name": "x"}, "num_classes": 1}}, path)
    with pytest.raises(RecipeError, match="expected 'model.\\*' weights"):
        read_detector_checkpoint(path)
