"""``teacher.input: native``: a teacher at a larger input sees training images prepared at its
own size; the student gets them resized to its size, boxes scaled; validation is the student's."""

import pytest
import pytorch_lightning as pl
import torch
from test_distillation_module import build_module, tiny_recipe

from distill.distillation.module import student_view
from distill.errors import RecipeError
from distill.pipeline import check
from distill.stages.link import teacher_input_size
from distill.training import prepare_data


def test_student_view_resizes_images_and_scales_boxes():
    images = torch.zeros(2, 3, 256, 256)
    images[:, :, 64:128, 32:96] = 1.0  # a white square: x 32..96, y 64..128
    targets = [{"boxes": torch.tensor([[32.0, 64.0, 96.0, 128.0]]), "labels": torch.tensor([1]),
                "scale": 0.5}, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}]
    small, scaled = student_view(images, targets, 128)
    assert small.shape == (2, 3, 128, 128)
    assert scaled[0]["boxes"].tolist() == [[16.0, 32.0, 48.0, 64.0]]
    assert scaled[0]["scale"] == 0.25 and scaled[1]["boxes"].shape == (0, 4)
    assert small[0, 0, 40, 30].item() == pytest.approx(1.0)  # inside the scaled box
    assert small[0, 0, 10, 10].item() == pytest.approx(0.0)
    assert targets[0]["boxes"].tolist() == [[32.0, 64.0, 96.0, 128.0]]  # the batch is kept


def test_native_input_feeds_the_teacher_its_size_and_the_student_its_own(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"teacher.model.image_size": "256",
                                      "teacher.input": "native"})
    size = teacher_input_size(recipe)
    assert size == 256
    data = prepare_data(recipe, train_image_size=size)
    assert next(iter(data.train_dataloader()))[0].shape[-1] == 256
    assert next(iter(data.val_dataloader()))[0].shape[-1] == 128
    module = build_module(recipe, data.class_names)
    seen: dict[str, list[int]] = {"teacher": [], "student": []}
    module.teacher.register_forward_pre_hook(
        lambda m, args: seen["teacher"].append(args[0].shape[-1]))
    module.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen["student"].append(args[0].shape[-1]), with_kwargs=True)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, logger=False, accelerator="cpu",
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1)
    trainer.fit(module, datamodule=data)
    assert seen["teacher"][:2] == [256, 256]
    assert set(seen["student"]) == {128}  # training and validation
    assert torch.isfinite(trainer.callback_metrics["train/distill_loss"])

    resized = tiny_recipe(tmp_path, **{"teacher.model.image_size": "256"})
    assert teacher_input_size(resized) is None  # the default: the student's batch upsampled


def test_native_input_with_a_smaller_teacher_stops_at_the_check(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"model.image_size": "256", "teacher.input": "native"})
    with pytest.raises(RecipeError, match=r"teacher.input: native .*\(128\) is smaller than the "
                                          r"student's \(256\)"):
        check(recipe, batches=1)
    with pytest.raises(RecipeError, match=r"teacher.input.*native"):
        tiny_recipe(tmp_path, **{"teacher.input": "full"})
