"""Mixed precision on CPU: bf16-mixed distillation, teacher precision and memory format."""

import math

import pytest
import torch
from distill_steps import fit_steps
from test_distillation_module import build_module, tiny_recipe

from distill.distillation.terms import TermInputs
from distill.errors import RecipeError
from distill.training import prepare_data


def spy_dtypes(module) -> dict[str, list[torch.dtype]]:
    """Record the dtypes of the teacher's raw features and of the distiller's losses."""
    seen: dict[str, list[torch.dtype]] = {"teacher": [], "distill": [], "distill_input": []}
    module.teacher.register_forward_hook(
        lambda m, i, out: seen["teacher"].append(out.features[0].dtype))

    def on_distill(m, inputs, out):
        seen["distill_input"].append(inputs[0][0].dtype)
        seen["distill"].append(out["total"].dtype)

    module.distiller["feature"].levels.register_forward_hook(on_distill)
    return seen


@pytest.mark.parametrize("teacher_precision", ["null", "bf16"])
def test_bf16_mixed_distillation_has_finite_falling_float32_loss(
    tmp_path, one_thread, teacher_precision
):
    recipe = tiny_recipe(tmp_path, **{
        "teacher.precision": teacher_precision,
        "teacher.channels_last": "true",
        "distill.weight.schedule": "constant",
        "optim.warmup_epochs": "0",
        "optim.ema_decay": "0",
    })
    data = prepare_data(recipe)
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    module = build_module(recipe, data.class_names)
    conv = next(m for m in module.teacher.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = spy_dtypes(module)
    steps = 6
    record = fit_steps(module, batch, steps, "bf16-mixed")
    assert len(record.losses) == steps
    assert all(math.isfinite(v) for v in record.losses + record.distill)
    assert sum(record.losses[-2:]) / 2 < record.losses[0]
    assert record.distill[-1] < record.distill[0]
    # under bf16-mixed autocast the teacher runs in bf16 (its own setting or the student's) ...
    assert set(seen["teacher"]) == {torch.bfloat16}
    # ... while the distillation loss sees float32 maps and is computed in float32
    assert set(seen["distill_input"]) == {torch.float32}
    assert set(seen["distill"]) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in module.parameters())  # mixed, not true bf16


def test_teacher_in_bf16_under_a_float32_student(tmp_path, one_thread):
    recipe = tiny_recipe(tmp_path, **{"teacher.precision": "bf16"})
    module = build_module(recipe, ["a", "b"])
    seen = spy_dtypes(module)
    images = torch.randn(2, 3, 128, 128)
    teacher = module.teacher_output(images)
    assert seen["teacher"] == [torch.bfloat16]
    assert all(f.dtype == torch.float32 for f in teacher.features)
    assert teacher.cls_logits.dtype == teacher.box_deltas.dtype == torch.float32
    student = module.model(images)
    assert student.features[0].dtype == torch.float32
    losses = module.distiller["feature"](TermInputs(student, teacher, [], (128, 128)))
    assert losses["total"].dtype == torch.float32 and torch.isfinite(losses["total"])
    full = build_module(tiny_recipe(tmp_path, **{"teacher.precision": "32"}), ["a", "b"])
    full.teacher.load_state_dict(module.teacher.state_dict())
    exact = full.teacher_output(images).features
    for low, high in zip(teacher.features, exact):  # bf16 is close to float32, not equal
        assert not torch.equal(low, high)
        assert torch.allclose(low, high, atol=0.1 * float(high.abs().max()))


def test_bad_teacher_precision_names_the_key(tmp_path):
    with pytest.raises(RecipeError, match="'teacher.precision' is 'fp8'"):
        tiny_recipe(tmp_path, **{"teacher.precision": "fp8"})
