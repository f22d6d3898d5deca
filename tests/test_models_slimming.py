"""model.options: light head levels (light_levels, light_block) and GroupNorm + WS (norm: gn_ws)."""

import pytest
import torch
from timm.layers import StdConv2d
from torch import nn

from distill.config import ModelConfig
from distill.errors import RecipeError
from distill.info import model_breakdown
from distill.models import build_model
from distill.models.light import LightConv, channel_shuffle
from distill.training import check_model

TAPS = ("cls_hidden", "box_hidden")  # the head tower outputs CrossKD reads

pytestmark = pytest.mark.usefixtures("one_thread")

TARGETS = [{"boxes": torch.tensor([[8.0, 12.0, 60.0, 50.0], [70.0, 64.0, 120.0, 110.0]]),
            "labels": torch.tensor([0, 2])},
           {"boxes": torch.tensor([[30.0, 30.0, 90.0, 100.0]]), "labels": torch.tensor([1])}]
# (model, light_block): EfficientDet's separable head, a searched student, RetinaNet's dense head
LIGHT = [("efficientdet_dm3", "grouped"), ("maenas_dm3", "grouped"),
         ("retinanet_tiny", "grouped"), ("retinanet_tiny", "separable")]


def _build(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=3, image_size=128, **options)


@pytest.mark.parametrize("name,block", LIGHT)
def test_light_p3_cuts_only_p3_flops(name, block):
    base = model_breakdown(name, num_classes=3, image_size=128)
    light = model_breakdown(name, num_classes=3, image_size=128, light_levels=[3],
                            light_block=block)
    assert light["flops"] < base["flops"]
    base_levels, light_levels = (b["components"]["head"]["levels"] for b in (base, light))
    for h in ("class_head", "box_head"):
        assert light_levels[0][h]["tower_flops"] < base_levels[0][h]["tower_flops"] / 2
        assert light_levels[0][h]["predictor_flops"] == base_levels[0][h]["predictor_flops"]
    assert [lv["flops"] for lv in light_levels[1:]] == [lv["flops"] for lv in base_levels[1:]]
    for key in ("backbone", "neck"):
        assert light["components"][key] == base["components"][key]


@pytest.mark.parametrize("name,block", LIGHT[1:3])
def test_light_levels_keep_outputs_and_the_crosskd_api(name, block):
    base = _build(name).eval()
    light = _build(name, light_levels=[3, 4], light_block=block).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        out, ref = light(x, taps=TAPS), base(x, taps=TAPS)
    assert out.cls_logits.shape == ref.cls_logits.shape
    assert out.box_deltas.shape == ref.box_deltas.shape
    assert [h.shape for h in out.taps["cls_hidden"]] == [h.shape for h in ref.taps["cls_hidden"]]
    head = light.class_head
    assert sorted(head.light) == ["0", "1"] and len(head.light["0"]) > 0
    assert head.light["0"] is not head.light["1"]  # every light level has its own blocks
    with torch.no_grad():
        feats = light.neck(light.backbone(x))
        # CrossKD runs the last layers of a (teacher) tower and the predictor on tower outputs
        last = head.run_tower(out.taps["cls_hidden"][0], 0, start=head.num_layers - 1)
        assert last.shape == out.taps["cls_hidden"][0].shape
        whole = torch.cat([head.project(head.run_tower(f, i)) for i, f in enumerate(feats)], 1)
    torch.testing.assert_close(whole, out.cls_logits)


@pytest.mark.parametrize("name,block", [LIGHT[0], LIGHT[3]])
def test_light_depth_replaces_only_the_first_tower_convs(name, block):
    def p3_tower_flops(**options):
        levels = model_breakdown(name, num_classes=3, image_size=128, **options)[
            "components"]["head"]["levels"]
        return levels[0]["class_head"]["tower_flops"]

    base, full = p3_tower_flops(), p3_tower_flops(light_levels=[3], light_block=block)
    one = p3_tower_flops(light_levels=[3], light_block=block, light_depth=1)
    depth = _build(name).class_head.num_layers
    # one light conv of `depth`: the tower loses a 1/depth share of what the full light loses
    assert one == base - (base - full) // depth
    light = _build(name, light_levels=[3], light_block=block, light_depth=1).eval()
    assert len(light.class_head.light["0"]) == (1 if name.startswith("efficientdet") else 3)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        out = light(x, taps=TAPS)
        feats = light.neck(light.backbone(x))
        # past its first conv the light P3 runs the shared tower, as P4 does (fresh norms in
        # eval mode are the identity on every level)
        h = torch.randn(feats[0].shape, generator=torch.Generator().manual_seed(2))
        for head in (light.class_head, light.box_head):
            torch.testing.assert_close(head.run_tower(h, 0, start=1),
                                       head.run_tower(h, 1, start=1))
            assert not torch.allclose(head.run_tower(h, 0), head.run_tower(h, 1))
        whole = torch.cat([light.class_head.project(light.class_head.run_tower(f, i))
                           for i, f in enumerate(feats)], 1)
    torch.testing.assert_close(whole, out.cls_logits)


def test_light_blocks_train():
    model = _build("efficientdet_dm3", light_levels=[3], light_block="grouped").train()
    light_params = list(model.class_head.light.parameters()) + list(
        model.box_head.light.parameters())
    before = [p.detach().clone() for p in light_params]
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(6):
        loss = model.loss(model(x), TARGETS)["loss"]
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in light_params)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(b, p) for b, p in zip(before, light_params))


def test_light_block_layouts():
    dense_sep = LightConv(32, "separable", separable_head=False)
    dense_grp = LightConv(32, "grouped", separable_head=False)
    sep_grp = LightConv(32, "grouped", separable_head=True)
    assert dense_sep.conv_dw.groups == 32 and dense_sep.conv.kernel_size == (1, 1)
    assert isinstance(dense_grp.conv_dw, nn.Identity) and dense_grp.conv.groups == 8
    assert dense_grp.conv.kernel_size == (3, 3)
    assert sep_grp.conv_dw.groups == 32 and sep_grp.conv.groups == 8
    x = torch.randn(1, 32, 5, 5)
    assert all(m(x).shape == x.shape for m in (dense_sep, dense_grp, sep_grp))
    # the shuffle interleaves the groups: channel i of group g goes to i * groups + g
    y = channel_shuffle(torch.arange(8.0).reshape(1, 8, 1, 1), 4)
    assert y.flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


@pytest.mark.parametrize("options,key,message", [
    ({"light_block": "depthwise"}, "light_block", "unknown value 'depthwise'; valid: grouped, "
                                                  "separable"),
    ({"norm": "gn"}, "norm", "unknown value 'gn'; valid: bn, gn_ws"),
    ({"light_levels": [2]}, "light_levels", "[2] not among this model's pyramid levels; valid: "
                                            "[3, 4, 5, 6, 7]"),
    ({"light_levels": "P3"}, "light_levels", "'P3' is not a list of pyramid levels"),
    ({"light_levels": [3], "light_block": "separable"}, "light_block",
     "depthwise-separable already (EfficientDet); valid here: grouped"),
    ({"norm": "gn_ws", "backbone_weights": "w.pth"}, "norm", "gn_ws is for students trained"),
    ({"light_depth": 0}, "light_depth", "0 is not a positive number of tower convs"),
    ({"light_levels": [3], "light_depth": 9}, "light_depth",
     "9 is more than this head's 2 tower convs; valid: 1..2 or null (all)"),
])
def test_invalid_options_stop_the_build(options, key, message):
    with pytest.raises(RecipeError) as err:
        with torch.device("meta"):
            build_model("efficientdet_dm3", num_classes=3, **options)
    assert str(err.value).startswith(f"model.options.{key}: ") and message in str(err.value)
    # a recipe says so at check time, before any data is read
    with pytest.raises(RecipeError, match=rf"model \('efficientdet_dm3'\): model.options.{key}"):
        check_model(ModelConfig(name="efficientdet_dm3", options=options))


def test_light_levels_on_a_three_level_teacher():
    with pytest.raises(RecipeError, match=r"\[6\] not among .* valid: \[3, 4, 5\]"):
        build_model("damo_heavy_neck_tiny", num_classes=3, light_levels=[6])


@pytest.mark.parametrize("name", ["efficientdet_dm3", "retinanet_tiny", "damo_heavy_neck_tiny"])
def test_gn_ws_has_no_batch_norm_and_same_outputs(name):
    base, gn = _build(name).eval(), _build(name, norm="gn_ws", light_levels=[3]).eval()
    for part in (gn.neck, gn.class_head, gn.box_head, gn.backbone):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in part.modules())
    for head in (gn.class_head, gn.box_head):
        assert any(isinstance(m, nn.GroupNorm) for m in head.modules())
        assert any(isinstance(m, StdConv2d) for m in head.modules())
        assert any(isinstance(m, StdConv2d) for m in head.light.modules())
        predictor = getattr(head, "predict", None) or head.predictor
        assert not any(isinstance(m, StdConv2d) for m in predictor.modules())
    if name != "retinanet_tiny":  # RetinaNet's FPN has no norms, so no standardised convs
        assert any(isinstance(m, StdConv2d) for m in gn.neck.modules())
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        out, ref = gn(x), base(x)
    assert out.cls_logits.shape == ref.cls_logits.shape
    assert [f.shape for f in out.features] == [f.shape for f in ref.features]


def test_gn_ws_trains_with_batch_size_one():
    x, targets = torch.randn(1, 3, 128, 128), TARGETS[:1]
    model = _build("efficientdet_dm3", norm="gn_ws").train()  # P7 is 1x1 at 128 px
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = model.loss(model(x), targets)["loss"]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.neck.parameters()] + [p.grad for p in
                                                         model.class_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # BatchNorm cannot: a 1x1 map of one image leaves it one value per channel
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _build("efficientdet_dm3").train()(x)
