"""The damo_yolo family: ZeroHead, PointDetector (decode, loss, predict, export), the
published sizes, re-parameterisation and a feature term with an anchor teacher."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from detector_fixtures import two_image_batch
from torchvision.ops import box_iou

from distill.config import DistillConfig
from distill.distillation import TERMS
from distill.distillation.terms import BuildContext, TermInputs, resolve_terms
from distill.errors import RecipeError
from distill.export import ExportGraph
from distill.info import count_macs
from distill.models import build_model, list_models
from distill.models.giraffe import reparameterize
from distill.models.zero_head import ZeroHead
from students.damo_nano import TinyNasMobile
from students.damo_tinynas import TINYNAS_STRUCTURES, search_structure, tinynas_backbone


def _pico(num_classes: int = 3, **overrides):
    torch.manual_seed(0)
    return build_model("damo_yolo_pico", num_classes=num_classes, **overrides)


def test_presets_are_registered():
    assert {"damo_yolo_ns", "damo_yolo_nm", "damo_yolo_nl", "damo_yolo_t", "damo_yolo_s",
            "damo_yolo_m", "damo_yolo_l", "damo_yolo_pico", "damo_yolo_tinynet"} <= set(
        list_models())


def test_zero_head_shapes_and_init():
    head = ZeroHead([8, 16, 32], num_classes=3, reg_max=7)
    feats = [torch.rand(2, c, s, s) for c, s in [(8, 16), (16, 8), (32, 4)]]
    cls, box = head(feats)
    assert cls.shape == (2, 16 * 16 + 8 * 8 + 4 * 4, 3) and box.shape == (2, 336, 4 * 8)
    assert all(conv.kernel_size == (3, 3) for conv in [*head.cls, *head.reg])
    torch.testing.assert_close(head.cls[0].bias, torch.full((3,), -math.log(99.0)))
    # row order: level, then row-major locations; the second level starts at row 256
    level1 = head.cls[1](feats[1]).permute(0, 2, 3, 1).reshape(2, -1, 3)
    torch.testing.assert_close(cls[:, 256:320], level1)


def test_priors_and_decode_by_hand():
    model = _pico()
    priors = model.priors((128, 128), torch.device("cpu"))
    assert priors.shape == (16 * 16 + 8 * 8 + 4 * 4, 4)
    torch.testing.assert_close(priors[:2], torch.tensor([[0.0, 0, 8, 8], [8.0, 0, 16, 8]]))
    torch.testing.assert_close(priors[256], torch.tensor([0.0, 0, 16, 16]))
    # a cell at stride 16 centred (24, 40); sides 2, 0, 1, 3 bins -> 32, 0, 16, 48 px
    cell = torch.tensor([16.0, 32.0, 32.0, 48.0])
    logits = torch.full((4, model.reg_max + 1), -50.0)
    for side, bin_ in enumerate([2, 0, 1, 3]):
        logits[side, bin_] = 50.0
    box = model.decode_boxes(logits.flatten()[None], cell[None])
    torch.testing.assert_close(box, torch.tensor([[24.0 - 32, 40.0, 24.0 + 16, 40.0 + 48]]))
    assert model.prediction_signature() == ("points", 1)
    assert model.TAPS == {"cls_hidden", "box_hidden"} and model.head_layers("cls_hidden") == 0


def test_options_the_head_cannot_honour_are_refused():
    with pytest.raises(RecipeError, match="light_levels: ZeroHead has no tower"):
        _pico(light_levels=[3])
    with pytest.raises(RecipeError, match="neck_widths"):
        _pico(neck_widths=(8, 16))
    with pytest.raises(RecipeError, match="no pretrained weights"):
        build_model("damo_yolo_t", num_classes=3, pretrained=True)


def test_assignment_and_loss_settings_come_from_the_recipe():
    model = _pico(ota_topk=5, ota_radius=1.5, dfl_weight=0.5)
    assert model.assigner == {"radius": 1.5, "topk": 5, "cls_weight": 1.0, "iou_weight": 3.0}
    assert model.loss_weights == {"qfl": 1.0, "giou": 2.0, "dfl": 0.5}
    said = model.describe_head()
    assert "within 1.5 strides" in said["assignment"] and "top-5" in said["assignment"]
    assert "DFL x 0.5" in said["loss"] and "8 bins" in said["head"]
    for key, value in (("ota_radius", 0.0), ("ota_topk", 0), ("giou_weight", -1.0)):
        with pytest.raises(RecipeError, match=f"model.options.{key}"):
            _pico(**{key: value})


def test_loss_keys_and_no_positive_image():
    model, (images, targets) = _pico(), two_image_batch()
    out = model(images)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = model.loss(out, empty)
    assert losses["box_loss"] == 0 and losses["cls_loss"] > 0
    losses = model.loss(out, targets)
    assert {"loss", "cls_loss", "box_loss", "giou_loss", "dfl_loss"} <= set(losses)
    torch.testing.assert_close(losses["loss"], losses["cls_loss"] + losses["box_loss"])
    torch.testing.assert_close(losses["box_loss"],
                               2.0 * losses["giou_loss"] + 0.25 * losses["dfl_loss"])
    # outside DDP, normalising across ranks changes nothing
    torch.testing.assert_close(model.loss(out, targets, across_ranks=True)["loss"],
                               losses["loss"])
    losses["loss"].backward()
    assert model.head.reg[0].weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def trained():
    """damo_yolo_pico fitted to one fixed batch (30 Adam steps; BatchNorm momentum 0.5, so
    that the running statistics the eval-mode predictions use follow the short fit)."""
    model, (images, targets) = _pico(bn_momentum=0.5), two_image_batch()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(model(images), targets)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    return model.eval(), images, targets, losses


def test_loss_falls_and_predictions_find_the_boxes(trained):
    model, images, targets, losses = trained
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        detections = model.predict(model(images), score_threshold=0.05)
    for det, target in zip(detections, targets):
        for box, label in zip(target["boxes"], target["labels"]):
            hits = det["labels"] == label
            assert hits.any(), f"no detection of class {label}"
            assert box_iou(det["boxes"][hits], box[None]).max() > 0.5


def test_export_with_nms_equals_predict(trained):
    model, images, _, _ = trained
    with torch.no_grad():
        expected = model.predict(model(images), score_threshold=0.05)
        graph = ExportGraph(model, 128, nms=True).eval()  # the model's own NMS IoU
        boxes, scores, labels, image = graph(images)
    for i, det in enumerate(expected):
        mine = image == i
        n = len(det["boxes"])
        assert n > 0 and int(mine.sum()) == n
        torch.testing.assert_close(boxes[mine], det["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(scores[mine], det["scores"], rtol=1e-4, atol=1e-5)
        assert torch.equal(labels[mine], det["labels"])


def test_feature_term_pairs_with_an_efficientdet_teacher():
    student, (images, targets) = _pico(), two_image_batch()
    teacher = build_model("efficientdet_dm3", num_classes=3).eval()
    ctx = BuildContext(student, teacher, 128, 128)
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": "feature", "loss": "cwd"}]))
    term = TERMS.get("feature")(cfg, ctx)
    assert term.strides == [8, 16, 32]
    with torch.no_grad():
        t_out = teacher(images)
    value = term(TermInputs(student(images), t_out, targets, (128, 128)))["total"]
    assert torch.isfinite(value) and value > 0
    value.backward()
    assert student.neck.out3.fuse[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_crosskd_across_families_is_refused_before_training():
    anchors = build_model("efficientdet_dm3", num_classes=3).eval()
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": "crosskd"}]))
    for student, teacher in ((_pico(), anchors), (anchors, _pico())):
        with pytest.raises(RecipeError, match="points per location .* differ"):
            TERMS.get("crosskd")(cfg, BuildContext(student, teacher, 128, 128))


def _identity(conv: torch.nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels)[:, :, None, None])
        conv.bias.zero_()


def test_crosskd_through_a_zero_head_teacher():
    torch.manual_seed(0)
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": "crosskd", "box_min_score": 0.0}]))
    student, (images, targets) = _pico(), two_image_batch()
    teacher = build_model("damo_yolo_tinynet", num_classes=3, image_size=128).eval()
    teacher.requires_grad_(False)  # frozen, as the distillation module keeps it
    term = TERMS.get("crosskd")(cfg, BuildContext(student, teacher, 128, 128))
    assert cfg.teacher_layers == 0  # no tower: the teacher's projections alone
    # neck widths 24/48/96 -> 32/64/128: one align conv per level
    assert [c.weight.shape[:2] for c in term.cls_align] == [(32, 24), (64, 48), (128, 96)]
    with torch.no_grad():
        t_out = teacher(images)
    losses = term(TermInputs(student(images, taps=term.taps), t_out, targets, (128, 128)))
    assert torch.isfinite(losses["total"]) and losses["total"] > 0
    losses["total"].backward()
    assert student.neck.out3.fuse[0].weight.grad.abs().sum() > 0
    assert term.box_align[2].weight.grad.abs().sum() > 0
    assert student.head.cls[0].weight.grad is None  # the student's own predictor untouched
    assert all(p.grad is None for p in teacher.parameters())

    # a student that is the teacher, through identity aligns: the cross predictions are the
    # teacher's own, so the term is 0
    twin = copy.deepcopy(teacher)
    same = TERMS.get("crosskd")(cfg, BuildContext(twin, teacher, 128, 128))
    for conv in (*same.cls_align, *same.box_align):
        _identity(conv)
    with torch.no_grad():
        out = same(TermInputs(twin(images, taps=same.taps), t_out, targets, (128, 128)))
    assert out["total"].abs() < 1e-5


@pytest.mark.parametrize("name", ["damo_yolo_pico", "damo_yolo_t", "damo_yolo_m"])
def test_reparameterised_model_gives_the_same_outputs(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=128).eval()
    for module in model.modules():  # non-trivial BN statistics to fold in
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = model(images)
        after = reparameterize(model)(images)
    torch.testing.assert_close(after.cls_logits, before.cls_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after.box_deltas, before.box_deltas, rtol=1e-4, atol=1e-4)


# DAMO-YOLO's published sizes (REFERENCE.md section 6; 80 classes, deployed form): (input,
# params, FLOPs). The nano FLOPs come out 2-4% under the table: DAMO's counter (thop) also
# counts the BatchNorms its deploy step leaves in the depthwise blocks; ours counts convs only.
PUBLISHED = {"damo_yolo_ns": (416, 1.41e6, 1.56e9), "damo_yolo_nm": (416, 2.71e6, 3.69e9),
             "damo_yolo_nl": (416, 5.69e6, 6.04e9), "damo_yolo_t": (640, 8.5e6, 18.1e9),
             "damo_yolo_s": (640, 16.3e6, 37.8e9), "damo_yolo_m": (640, 28.2e6, 61.8e9),
             "damo_yolo_l": (640, 42.1e6, 97.3e9)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_and_flops_within_five_percent(name):
    size, params, flops = PUBLISHED[name]
    model = reparameterize(build_model(name, num_classes=80).eval()).to("meta")
    assert model.image_size == size
    mine = sum(p.numel() for p in model.parameters())
    mine_flops = 2 * count_macs(model, (size, size))  # shapes only, on the meta device
    assert abs(mine / params - 1) < 0.05, f"{name}: {mine / 1e6:.2f}M params"
    assert abs(mine_flops / flops - 1) < 0.05, f"{name}: {mine_flops / 1e9:.2f} GFLOPs"


@pytest.mark.parametrize("structure,channels", [("tinynas_l20_k1kx", [96, 192, 384]),
                                                ("tinynas_l35_kxkx", [128, 256, 512]),
                                                ("tinynas_nano_middle", [64, 128, 256])])
def test_tinynas_backbones_return_strides_8_16_32(structure, channels):
    backbone = (TinyNasMobile(structure) if structure.startswith("tinynas_nano")
                else tinynas_backbone(structure, "relu"))
    feats = backbone(torch.rand(1, 3, 64, 64))
    assert [f.shape[1:] for f in feats] == [(c, 64 // s, 64 // s)
                                            for c, s in zip(channels, (8, 16, 32))]
    assert backbone.channels == channels


@pytest.mark.parametrize("structure", list(TINYNAS_STRUCTURES))
def test_published_tinynas_lies_in_our_search_space_with_its_maps(structure):
    """The published residual structures, written in our space, pass its rules (so our search
    could have found them) and build a backbone with DAMO's maps at strides 8, 16, 32."""
    from distill.search.space import SearchSpace
    from distill.search_config import SearchSpaceConfig
    from students.nas.backbone import NasBackbone

    converted = search_structure(structure)
    assert SearchSpace.from_config(SearchSpaceConfig()).problems(converted) == []
    assert sum(block.depth for block in converted[1:]) == sum(
        stage.depth for stage in TINYNAS_STRUCTURES[structure][1])
    ours = NasBackbone(converted, strides=(8, 16, 32), num_extra=0)
    damo = tinynas_backbone(structure, "relu")
    x = torch.rand(1, 3, 64, 64)
    assert [f.shape for f in ours(x)] == [f.shape for f in damo(x)]
    with pytest.raises(ValueError, match="tinynas_l35_kxkx"):
        search_structure("tinynas_l35_kxkx")


def test_for_deployment_fuses_every_repconv_and_keeps_the_outputs():
    from distill.models.giraffe import RepConv

    torch.manual_seed(0)
    model = build_model("damo_yolo_pico", num_classes=3).eval()
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = model(images)
        deployed = model.for_deployment()
        after = deployed(images)
    reps = [m for m in deployed.modules() if isinstance(m, RepConv)]
    assert reps and all(m.fused is not None for m in reps)
    torch.testing.assert_close(after.box_deltas, before.box_deltas, atol=1e-4, rtol=1e-4)
    anchors = build_model("efficientdet_dm3", num_classes=3)
    assert anchors.for_deployment() is anchors
