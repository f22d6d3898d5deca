"""Tiny detector checkpoints (no training) for the predict and export tests."""

from __future__ import annotations

from pathlib import Path

import torch
from test_distillation_module import tiny_recipe

from distill.config import recipe_to_dict
from distill.data.synthetic import CLASS_NAMES
from distill.distillation.module import DistillationModule
from distill.lightning.detection import DetectionModule

CLASSES = list(CLASS_NAMES)  # the embedded data's classes


def tiny_module(tmp_path: Path, seed: int = 0) -> DetectionModule:
    """The quick start's student (efficientdet_dm3, 128 px), random weights, class
    scores spread over anchors and classes, so that it detects something."""
    torch.manual_seed(seed)
    module = DetectionModule(recipe_to_dict(tiny_recipe(tmp_path)), CLASSES)
    predict = module.model.class_head.predict.conv_pw
    with torch.no_grad():  # scores spread over anchors (ties would make NMS order arbitrary)
        predict.bias.copy_(torch.randn_like(predict.bias) - 3.0)
        predict.weight.mul_(20.0)
    return module.eval()


def save_module(module: DetectionModule, path: Path) -> Path:
    """The checkpoint `distill train` writes (state_dict + hyper_parameters), without a trainer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(),
                "hyper_parameters": {"recipe": dict(module.hparams["recipe"]),
                                     "class_names": list(module.hparams["class_names"])}}, path)
    return path


def save_stage_checkpoint(module: DetectionModule, tmp_path: Path, path: Path) -> Path:
    """A `distill run` distilled-stage checkpoint: the same student plus ``distiller.*``."""
    recipe = recipe_to_dict(tiny_recipe(tmp_path))
    stage = DistillationModule(recipe, CLASSES)
    stage.model.load_state_dict(module.model.state_dict())
    assert any(k.startswith("distiller.") for k in stage.state_dict())
    return save_module(stage, path)


def two_image_batch() -> tuple[torch.Tensor, list[dict]]:
    """Two random 128 px images with three boxes of classes 0, 2 and 1."""
    images = torch.rand(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0], [80.0, 20.0, 120.0, 60.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.tensor([[30.0, 30.0, 100.0, 110.0]]), "labels": torch.tensor([1])}]
    return images, targets
