"""Prediction-level distillation: losses against hand values, anchor pairing, CrossKD, balancing."""

import copy
import math

import pytest
import torch

from distill.config import WeightConfig, load_recipe
from distill.distillation.prediction_losses import binary_kl_kd, giou_kd, l1_kd, soft_focal_kd
from distill.distillation.terms import (
    BuildContext,
    TermInputs,
    TermWeight,
    build_terms,
    resolve_terms,
)
from distill.distillation.terms.crosskd import CrossKDTerm, CrossKDTermConfig
from distill.distillation.terms.prediction import (
    PredictionTerm,
    PredictionTermConfig,
    prediction_kd,
)
from distill.errors import RecipeError
from distill.lightning.detection import build_detector
from distill.models.anchors import BoxCoder
from distill.models.detector import DetectorOutput


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_soft_focal_by_hand():
    s, t = torch.tensor([0.0]), torch.tensor([logit(0.8)])
    # p_s 0.5, p_t 0.8: BCE = ln 2, modulating |0.5 - 0.8|^2 = 0.09
    assert soft_focal_kd(s, t).item() == pytest.approx(math.log(2) * 0.09, rel=1e-6)
    # tau 2: p_t = sigmoid(logit(0.8) / 2) = 2/3, p_s = 1/2, times tau^2
    p_t = 1 / (1 + math.exp(-logit(0.8) / 2))
    bce = -(p_t * math.log(0.5) + (1 - p_t) * math.log(0.5))
    expected = bce * abs(0.5 - p_t) ** 2 * 4
    assert soft_focal_kd(s, t, tau=2.0).item() == pytest.approx(expected, rel=1e-6)
    x = torch.randn(50)
    assert soft_focal_kd(x, x.clone()).abs().max().item() == 0.0


def test_binary_kl_by_hand():
    s, t = torch.tensor([0.0]), torch.tensor([logit(0.8)])
    expected = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert binary_kl_kd(s, t).item() == pytest.approx(expected, rel=1e-5)
    x = torch.randn(50)
    assert binary_kl_kd(x, x.clone()).abs().max().item() < 1e-6


def test_box_losses_by_hand():
    a, b = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    anchors = torch.tensor([[0.0, 0.0, 4.0, 2.0]])  # 4 wide, 2 high
    # IoU 1/7, enclosing 9, union 7: GIoU = 1/7 - 2/9
    assert giou_kd(a, b, anchors).item() == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-6)
    assert giou_kd(a, a, anchors).item() == pytest.approx(0.0, abs=1e-7)
    # every corner 1 px off: 1/4 + 1/2 + 1/4 + 1/2
    assert l1_kd(a, b, anchors).item() == pytest.approx(1.5)


def test_prediction_kd_normalisers_by_hand():
    cfg = PredictionTermConfig(box="l1", box_min_score=0.5, box_weight=2.0)
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0]])
    t_cls = torch.tensor([[[logit(0.8)], [logit(0.2)]]])  # [B=1, A=2, K=1]
    s_cls = torch.zeros(1, 2, 1)
    t_box = torch.zeros(1, 2, 4)
    s_box = torch.tensor([[[0.1, 0.0, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0]]])  # dx: 1 px, 3 px
    out = prediction_kd(cfg, s_cls, s_box, t_cls, t_box, anchors, coder.decode)
    cls = (math.log(2) * 0.09 + math.log(2) * 0.09) / max(1.0, 0.8 + 0.2)
    assert out["cls"].item() == pytest.approx(cls, rel=1e-5)
    # only anchor 0 (score 0.8 >= 0.5): l1 = 2 corners x 1 px / 10 px; weight 0.8 / max(1, 0.8)
    assert out["box"].item() == pytest.approx(2.0 * 0.2 * 0.8 / 1.0, rel=1e-5)
    assert out["total"].item() == pytest.approx(out["cls"].item() + out["box"].item())


def pair(student_name="efficientdet_dm3", size=128, teacher=None, teacher_size=128):
    student = build_detector({"name": student_name, "image_size": size}, 3)
    if teacher is None:
        teacher = copy.deepcopy(student)
    teacher.requires_grad_(False).eval()
    return student, teacher, BuildContext(student, teacher, size, teacher_size)


def outputs(student, teacher, images, head_hidden=False):
    s = student(images, taps=("cls_hidden", "box_hidden") if head_hidden else ())
    with torch.no_grad():
        t = teacher(images)
    return TermInputs(s, t, [], tuple(images.shape[-2:]))


def test_prediction_term_is_zero_for_a_copy_and_trains_only_the_student():
    torch.manual_seed(0)
    student, teacher, ctx = pair()
    student.eval()
    term = PredictionTerm(PredictionTermConfig(box_min_score=0.0), ctx)
    images = torch.randn(2, 3, 128, 128)
    out = term(outputs(student, teacher, images))
    assert out["cls"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["box"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # a different student: positive loss, gradients to the student only
        for p in student.class_head.predict.parameters():
            p.add_(0.5)
    out = term(outputs(student, teacher, images))
    assert out["cls"].item() > 1e-4
    out["total"].backward()
    assert student.class_head.predict.conv_pw.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_prediction_pairs_by_stride_and_rejects_other_input_sizes():
    student = build_detector({"name": "efficientdet_dm3", "image_size": 128}, 3)
    teacher = build_detector({"name": "efficientdet_dm2", "image_size": 192}, 3)
    with pytest.raises(RecipeError, match=r"stride 8.*input 128.*input 192.*same input size"):
        PredictionTerm(PredictionTermConfig(), BuildContext(student, teacher, 128, 192))
    teacher = build_detector({"name": "retinanet_tiny", "image_size": 128}, 3)
    with pytest.raises(RecipeError, match=r"anchors .* differ from the teacher's"):
        PredictionTerm(PredictionTermConfig(), BuildContext(student, teacher, 128, 128))
    teacher = build_detector({"name": "efficientdet_dm2", "image_size": 128}, 3).eval()
    term = PredictionTerm(PredictionTermConfig(strides=[16, 64]),
                          BuildContext(student, teacher, 128, 128))
    assert term.strides == [16, 64] and term.student_levels == [1, 3]
    s, t = term.paired(outputs(student.eval(), teacher, torch.randn(1, 3, 128, 128)))
    assert s["cls"].shape == t["cls"].shape == (1, (8 * 8 + 2 * 2) * 9, 3)
    # stride 16, first anchor: centre (8, 8), side 4 x 16
    assert s["priors"][0].tolist() == [-24.0, -24.0, 40.0, 40.0]


def test_crosskd_identity_align_through_the_predictor_is_zero():
    torch.manual_seed(0)
    student, teacher, ctx = pair()
    student.eval()
    term = CrossKDTerm(CrossKDTermConfig(teacher_layers=0, box_min_score=0.0), ctx)
    for align in (term.cls_align, term.box_align):
        with torch.no_grad():
            align.weight.copy_(torch.eye(align.weight.shape[0]).reshape(align.weight.shape))
            align.bias.zero_()
    out = term(outputs(student, teacher, torch.randn(2, 3, 128, 128), head_hidden=True))
    assert out["cls"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["box"].item() == pytest.approx(0.0, abs=1e-5)


def test_crosskd_gradients_reach_the_student_tower_not_its_predictor_nor_the_teacher():
    torch.manual_seed(0)
    student = build_detector({"name": "efficientdet_dm3", "image_size": 128}, 3)
    teacher = build_detector({"name": "efficientdet_dm2", "image_size": 128}, 3)
    teacher.requires_grad_(False).eval()
    term = CrossKDTerm(CrossKDTermConfig(box_min_score=0.0),
                       BuildContext(student, teacher, 128, 128))
    assert term.cls_align.in_channels == 24 and term.cls_align.out_channels == 32
    out = term(outputs(student, teacher, torch.randn(2, 3, 128, 128), head_hidden=True))
    out["total"].backward()
    assert term.cls_align.weight.grad.abs().sum() > 0
    assert student.class_head.conv_rep[-1].conv_pw.weight.grad.abs().sum() > 0
    assert student.class_head.predict.conv_pw.weight.grad is None  # own predictor untouched
    assert all(p.grad is None for p in teacher.parameters())
    message = r"crosskd\): teacher_layers: .* 2 tower layers; expected 0..2, got 4"
    with pytest.raises(RecipeError, match=message):
        cfg = load_recipe(None, ["distill.terms=[{kind: crosskd, teacher_layers: 4}]"]).distill
        build_terms(resolve_terms(cfg), BuildContext(student, teacher, 128, 128))


def test_auto_weight_keeps_the_weighted_term_at_target_times_detection():
    weight = TermWeight(WeightConfig(schedule="auto", target=0.5))
    det, value = torch.tensor(2.0), torch.tensor(40.0)
    for _ in range(5):
        w = weight(weight.scheduled(0, 100), value, det)
    assert (w * value).item() == pytest.approx(0.5 * 2.0)
    # halfway through the cosine (1 -> 0.1): 0.55 x target x det
    w = weight(weight.scheduled(50, 100), value, det)
    assert (w * value).item() == pytest.approx(0.55 * 0.5 * 2.0)
    assert {"det_avg", "term_avg", "updates"} <= set(weight.state_dict())
    fixed = TermWeight(WeightConfig(schedule="constant", start=3.0))
    assert fixed(fixed.scheduled(7, 10), value, det) == 3.0


def test_terms_take_section_defaults_and_bad_terms_are_named():
    recipe = load_recipe(None, ["distill.loss=mimic", "distill.strides=[8,16]",
                                "distill.terms=[{kind: feature}, {kind: prediction, cls: kl}]"])
    feature, prediction = resolve_terms(recipe.distill)
    assert feature.loss == "mimic" and feature.strides == [8, 16]
    assert prediction.cls == "kl" and prediction.strides is None  # all shared levels
    assert prediction.weight.schedule == "cosine"
    cases = {
        "[{kind: feature, los: cwd}]": r"distill.terms\[0\]: unknown key\(s\) \['los'\].*loss",
        "[{kind: logits}]": (r"distill.terms\[0\].kind: .*'logits'.*crosskd, feature, "
                             r"localization, prediction"),
        "[{kind: feature}, {kind: feature}]": "two terms are named 'feature'",
        "[{kind: prediction, tau: hot}]": r"distill.terms\[0\]: bad value for 'tau'",
        "[{kind: feature, weight: {schedule: wavy}}]": "weight.schedule: 'wavy'",
    }
    for terms, message in cases.items():
        with pytest.raises(RecipeError, match=message):
            resolve_terms(load_recipe(None, [f"distill.terms={terms}"]).distill)


def test_detector_output_fields_for_terms():
    student = build_detector({"name": "retinanet_tiny", "image_size": 128}, 3)
    out = student(torch.randn(1, 3, 128, 128), taps=("cls_hidden", "box_hidden"))
    assert isinstance(out, DetectorOutput)
    hidden = out.taps["cls_hidden"]
    assert [h.shape[1] for h in hidden] == [student.class_head.width] * 3
    assert out.cls_logits.shape[1] == sum(h.shape[-1] * h.shape[-2] * 9 for h in hidden)


@pytest.mark.parametrize("student_name, teacher_name", [
    ("efficientdet_dm3", "efficientdet_dm2"), ("damo_yolo_pico", "damo_yolo_pico")])
def test_a_teacher_at_twice_the_input_pairs_its_stride_2s_with_the_students_s(
        student_name, teacher_name):
    """The rule's premise: at stride 2s and twice the input, the teacher's priors (anchors or
    cells) are the student's at stride s scaled by 2, so its box outputs decode on the
    student's priors to the teacher's boxes in the student's pixels."""
    torch.manual_seed(0)
    student = build_detector({"name": student_name, "image_size": 128}, 3)
    teacher = build_detector({"name": teacher_name, "image_size": 256}, 3).eval()
    term = PredictionTerm(PredictionTermConfig(), BuildContext(student, teacher, 128, 256))
    strides = list(student.strides)
    assert term.strides == [s for s in strides if 2 * s in teacher.strides]
    assert [teacher.strides[t] for t in term.teacher_levels] == [2 * s for s in term.strides]
    assert "(stride 16)" in term.describe()["pairs"][0]
    s_priors = student.priors((128, 128), torch.device("cpu"))
    t_priors = teacher.priors((256, 256), torch.device("cpu"))
    s_cut = term.cut(s_priors[None], student, (128, 128), term.student_levels)[0]
    t_cut = term.cut(t_priors[None], teacher, (256, 256), term.teacher_levels)[0]
    assert torch.allclose(t_cut / 2, s_cut)
    images = torch.rand(2, 3, 128, 128)
    s_out = student(images)
    with torch.no_grad():
        t_out = teacher(torch.nn.functional.interpolate(images, size=(256, 256)))
    s, t = term.paired(TermInputs(s_out, t_out, [], (128, 128)))
    assert s["cls"].shape == t["cls"].shape and s["box"].shape == t["box"].shape
    t_boxes = teacher.decode_boxes(t["box"], s["priors"])  # on the student's priors
    own = teacher.decode_boxes(t["box"], t_cut) / 2  # on its own, in its pixels, halved
    assert torch.allclose(t_boxes, own, atol=1e-4)
    out = term(TermInputs(s_out, t_out, [], (128, 128)))
    out["total"].backward()
    assert torch.isfinite(out["total"]) and out["total"] > 0
    assert all(p.grad is None for p in teacher.parameters())
    top = strides[-1]  # the teacher has no stride twice the student's coarsest
    with pytest.raises(RecipeError, match=rf"stride {top} with its stride {2 * top}, which it"):
        PredictionTerm(PredictionTermConfig(strides=[top]), BuildContext(student, teacher, 128,
                                                                          256))


@pytest.mark.parametrize("kind", ["crosskd", "localization"])
def test_head_terms_take_a_teacher_at_twice_the_input(kind):
    torch.manual_seed(0)
    student = build_detector({"name": "damo_yolo_pico", "image_size": 128}, 3)
    teacher = build_detector({"name": "damo_yolo_pico", "image_size": 256}, 3).eval()
    teacher.requires_grad_(False)
    cfg = load_recipe(None, [f"distill.terms=[{{kind: {kind}}}]"]).distill
    terms = build_terms(resolve_terms(cfg), BuildContext(student, teacher, 128, 256))
    term = next(iter(terms.values()))
    assert [teacher.strides[t] for t in term.teacher_levels] == [16, 32]
    images = torch.rand(2, 3, 128, 128)
    s_out = student(images, taps=term.taps)
    with torch.no_grad():
        t_out = teacher(torch.nn.functional.interpolate(images, size=(256, 256)))
    out = term(TermInputs(s_out, t_out, [], (128, 128)))
    out["total"].backward()
    assert torch.isfinite(out["total"]) and out["total"] > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
