"""Localization distillation (LD) between DFL heads: its value by hand, its gradients, its
refusals."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from distill.config import DistillConfig
from distill.distillation import TERMS
from distill.distillation.terms import BuildContext, TermInputs, resolve_terms
from distill.distillation.terms.localization import localization_kd
from distill.errors import RecipeError
from distill.models import build_model


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(x: list[float]) -> list[float]:
    e = [math.exp(v) for v in x]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_localization_kd_by_hand(tau):
    teacher_side, student_side = [math.log(3.0), 0.0], [0.0, 0.0]  # 2 bins per side
    teacher = torch.tensor([teacher_side * 4, teacher_side * 4]).reshape(1, 2, 8)
    student = torch.tensor([student_side * 4, student_side * 4]).reshape(1, 2, 8)
    weight = torch.tensor([[0.8, 0.0]])  # the second prediction does not count
    kl = _kl(_softmax([v / tau for v in teacher_side]), _softmax([v / tau for v in student_side]))
    expected = 0.8 * kl * tau**2 / max(1.0, 0.8)
    assert localization_kd(student, teacher, weight, tau).item() == pytest.approx(expected,
                                                                                  rel=1e-6)
    assert localization_kd(teacher, teacher, weight, tau).item() == pytest.approx(0.0, abs=1e-7)


def _inputs(student, teacher, images):
    with torch.no_grad():
        t_out = teacher(images)
    return TermInputs(student(images), t_out, [], tuple(images.shape[-2:]))


def _term(student, teacher, **settings):
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": "localization", **settings}]))
    return TERMS.get("localization")(cfg, BuildContext(student, teacher, 128, 128))


def test_identical_models_give_zero_and_another_teacher_trains_only_the_student():
    torch.manual_seed(0)
    student = build_model("damo_yolo_pico", num_classes=3).eval()
    images = torch.rand(2, 3, 128, 128)
    same = _term(student, copy.deepcopy(student).requires_grad_(False))
    assert same(_inputs(student, same.models[1], images))["total"].item() == pytest.approx(
        0.0, abs=1e-6)
    torch.manual_seed(1)
    teacher = build_model("damo_yolo_pico", num_classes=3).eval().requires_grad_(False)
    with torch.no_grad():  # a teacher whose box distributions are far from uniform
        for conv in teacher.head.reg:
            conv.weight.normal_(0.0, 0.5)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    term = _term(student, teacher, tau=5.0)
    value = term(_inputs(student, teacher, images))["total"]
    assert value.item() > 0
    value.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_localization_is_refused_without_equal_distribution_heads():
    student = build_model("damo_yolo_pico", num_classes=3)
    anchors = build_model("efficientdet_dm3", num_classes=3)
    with pytest.raises(RecipeError, match=r"the student \(PointDetector\) has 8, the teacher "
                                          r"\(AnchorDetector\) None"):
        _term(student, anchors)
    wide = build_model("damo_yolo_pico", num_classes=3, reg_max=16)
    with pytest.raises(RecipeError, match=r"has 8, the teacher \(PointDetector\) 17"):
        _term(student, wide)
