"""EfficientDet family sizes (paper table), registry, student presets and the model contract."""

import math

import pytest
import torch

from distill.info import count_macs, model_info
from distill.models import Detector, DetectorOutput, build_model, list_models, model_description
from distill.models.bifpn import WeightedFusion
from distill.models.efficientdet import efficientdet_config

# paper table: params (M) and multiply-adds (B) at 90 classes
PAPER = {
    0: (3.9, 2.5),
    1: (6.6, 6.1),
    2: (8.1, 11.0),
    3: (12.0, 25.0),
    4: (21.0, 55.0),
    5: (34.0, 135.0),
    6: (52.0, 226.0),
    7: (52.0, 325.0),
}
STUDENTS = ["efficientdet_dm1", "efficientdet_dm2", "efficientdet_dm3"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("phi", sorted(PAPER))
def test_paper_table(phi):
    info = model_info(f"efficientdet_d{phi}", num_classes=90)
    params, macs = PAPER[phi]
    assert info["params"] == pytest.approx(params * 1e6, rel=0.02)
    assert info["macs"] == pytest.approx(macs * 1e9, rel=0.05)
    assert info["image_size"] == [[512, 640, 768, 896, 1024, 1280, 1280, 1536][phi]] * 2
    assert info["strides"] == [8, 16, 32, 64, 128]


def test_d0_matches_effdet_exactly():
    info = model_info("efficientdet_d0")
    assert info["params"] == 3_880_067  # effdet tf_efficientdet_d0 at 90 classes
    assert info["neck_channels"] == [64] * 5


def test_meta_count_equals_cpu_count():
    model = build_model("efficientdet_d0", num_classes=90, image_size=64)
    assert model_info("efficientdet_d0", image_size=64)["macs"] == count_macs(
        model, (64, 64), device="cpu"
    )


def test_students_strictly_smaller():
    sizes = [model_info(n) for n in ["efficientdet_d0", *STUDENTS]]
    for big, small in zip(sizes, sizes[1:], strict=False):
        assert small["params"] < big["params"]
        assert small["macs"] < big["macs"]
    assert [s["image_size"][0] for s in sizes] == [512, 384, 256, 128]
    assert [s["neck_channels"][0] for s in sizes] == [64, 48, 32, 24]


def test_compound_scaling_formula():
    cfg = efficientdet_config(-1)
    assert (cfg.fpn_channels, cfg.fpn_repeats, cfg.head_repeats, cfg.image_size) == (48, 2, 2, 384)
    half = efficientdet_config(0.5)
    assert half.fpn_channels == 72  # 64 * 1.35**0.5 = 74.4 -> multiple of 8
    assert half.image_size % 128 == 0 and half.fpn_repeats in (3, 4)
    assert efficientdet_config(2).fpn_channels == 112  # the table wins over the formula
    assert efficientdet_config(7).backbone == "efficientnet_b6"


def test_registry():
    names = list_models()
    for phi in range(8):
        assert f"efficientdet_d{phi}" in names
    for name in STUDENTS:
        assert name in names and model_description(name)
    with pytest.raises(ValueError, match="efficientdet_d0"):
        build_model("no_such_model", num_classes=3)
    with pytest.raises(ValueError, match="unknown override"):
        build_model("efficientdet_dm3", num_classes=3, not_an_option=1)


def test_overrides():
    model = build_model(
        "efficientdet_dm3",
        num_classes=3,
        fusion="softmax",
        fpn_channels=16,
        fpn_repeats=2,
        image_size=256,
    )
    fusions = [m for m in model.modules() if isinstance(m, WeightedFusion)]
    assert len(fusions) == 16 and all(f.mode == "softmax" for f in fusions)
    assert model.neck_channels == [16] * 5 and model.image_size == 256
    assert len(model.neck.cells) == 2 and len(model.class_head.conv_rep) == 2
    bias = model.class_head.predict.conv_pw.bias
    torch.testing.assert_close(bias, torch.full_like(bias, -math.log(99.0)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("efficientdet_dm3", num_classes=3, image_size=128)


def test_forward_contract(tiny):
    assert isinstance(tiny, Detector) and tiny.num_classes == 3
    out = tiny(torch.randn(2, 3, 128, 128))
    assert isinstance(out, DetectorOutput)
    num_anchors = 9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)
    assert out.cls_logits.shape == (2, num_anchors, 3)
    assert out.box_deltas.shape == (2, num_anchors, 4)
    assert [tuple(f.shape) for f in out.features] == [
        (2, 24, 128 // s, 128 // s) for s in tiny.strides
    ]
    # a non-square input works too, anchors follow the input size
    out = tiny(torch.randn(1, 3, 128, 192))
    assert out.cls_logits.shape[1] == tiny.anchors((128, 192), torch.device("cpu")).shape[0]


def test_predict_contract(tiny):
    tiny.eval()
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, 128, 128))
    tiny.train()
    dets = tiny.predict(out, score_threshold=0.0, max_detections=7)
    assert len(dets) == 2
    for d in dets:
        assert 0 < len(d["boxes"]) <= 7
        assert (d["boxes"][:, 0::2] >= 0).all() and (d["boxes"][:, 0::2] <= 128).all()
        assert (d["boxes"][:, 1::2] >= 0).all() and (d["boxes"][:, 1::2] <= 128).all()
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])
        assert d["labels"].min() >= 0 and d["labels"].max() < 3


def test_overfit_one_batch():
    torch.manual_seed(0)
    model = build_model("efficientdet_dm3", num_classes=3, image_size=128)
    images = torch.randn(2, 3, 128, 128)
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20, 60, 70], [70, 30, 120, 100]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[30.0, 30, 90, 90]]), "labels": torch.tensor([1])},
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model.loss(model(images), targets)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
        losses.append({k: v.item() for k, v in loss.items()})
    assert losses[-1]["loss"] < 0.3 * losses[0]["loss"]
    assert losses[-1]["cls_loss"] < losses[0]["cls_loss"]
    assert losses[-1]["box_loss"] < losses[0]["box_loss"]


def test_forward_matches_effdet():
    """With effdet's weights loaded in state_dict order, D0 outputs equal effdet's."""
    effdet = pytest.importorskip("effdet")
    torch.manual_seed(0)
    cfg = effdet.get_efficientdet_config("efficientdet_d0")
    cfg.redundant_bias = True  # the TF layout (conv bias before BN), as tf_efficientdet_d0
    cfg.backbone_args = dict(drop_path_rate=0.0)
    cfg.image_size = (64, 64)  # effdet sizes its resampling statically
    ref = effdet.EfficientDet(cfg, pretrained_backbone=False).eval()
    ours = build_model("efficientdet_d0", num_classes=90, drop_path_rate=0.0).eval()
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert [v.shape for v in ref_state.values()] == [v.shape for v in our_state.values()]
    ours.load_state_dict(dict(zip(our_state, ref_state.values(), strict=True)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref_cls, ref_box = ref(x)
        out = ours(x)

    def flat(levels, n):
        return torch.cat([t.permute(0, 2, 3, 1).reshape(1, -1, n) for t in levels], dim=1)

    torch.testing.assert_close(out.cls_logits, flat(ref_cls, 90), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.box_deltas, flat(ref_box, 4), atol=1e-5, rtol=1e-4)
