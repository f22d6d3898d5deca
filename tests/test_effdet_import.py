"""effdet weight import: exact equivalence with effdet (D0..D3, tf_ and native), file and CLI path.

effdet (a dev dependency) is the reference: random weights with randomised BatchNorm statistics,
converted, then both models run in eval mode on the same images.
"""

import math
from pathlib import Path

import pytest
import torch

from distill.checkpoints import load_state_strict, read_checkpoint
from distill.cli import main
from distill.models import build_model
from distill.models.anchors import AnchorGenerator
from distill.models.effdet_import import (
    BOX_ORDER,
    EFFDET_VARIANTS,
    convert_effdet_state_dict,
    effdet_state_dict,
    is_effdet_state_dict,
    load_effdet_checkpoint,
)
from distill.models.layers import downsample2x

effdet = pytest.importorskip("effdet")
from effdet.anchors import Anchors  # noqa: E402
from effdet.bench import DetBenchPredict  # noqa: E402

SIZE = 256
CLASSES = 5
EQUIVALENT = [f"{p}efficientdet_d{i}" for i in range(4) for p in ("tf_", "")]


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """BatchNorm statistics and affine, fusion weights, biases and heads away from their init."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=g) * (high - low) + low

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(rand(m.running_mean, -0.2, 0.2))
                m.running_var.copy_(rand(m.running_var, 0.5, 1.5))
                m.weight.copy_(rand(m.weight, 0.5, 1.5))
                m.bias.copy_(rand(m.bias, -0.2, 0.2))
        for name, p in model.named_parameters():
            if name.endswith("edge_weights"):
                p.copy_(rand(p, 0.2, 1.5))
            elif name.endswith("bias") and not name.startswith("backbone"):
                p.copy_(rand(p, -0.5, 0.5))
        # spread the outputs: logits over a few units, box deltas well inside the dw/dh clamp
        model.class_net.predict.conv_pw.weight.mul_(10.0)
        model.class_net.predict.conv_pw.bias.sub_(3.0)
        model.box_net.predict.conv_pw.weight.mul_(2.0)


def _effdet_model(variant: str, num_classes: int = CLASSES, seed: int = 0):
    torch.manual_seed(seed)
    cfg = effdet.get_efficientdet_config(variant)
    cfg.num_classes = num_classes
    cfg.image_size = (SIZE, SIZE)  # effdet sizes its resampling from the config
    model = effdet.EfficientDet(cfg, pretrained_backbone=False).eval()
    _randomise(model)
    return model


def _ours(variant: str, state: dict, num_classes: int = CLASSES, **overrides):
    model = build_model(EFFDET_VARIANTS[variant], num_classes=num_classes, **overrides)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _flat(levels: list[torch.Tensor], n: int) -> torch.Tensor:
    return torch.cat([t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, n) for t in levels], dim=1)


def _by_score_then_x1(scores: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(boxes[:, 0], stable=True)
    return order[torch.argsort(scores[order], descending=True, stable=True)]


@pytest.mark.parametrize("variant", EQUIVALENT)
def test_outputs_and_detections_match_effdet(variant):
    ref = _effdet_model(variant)
    ours = _ours(variant, convert_effdet_state_dict(ref.state_dict(), variant))
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    bench = DetBenchPredict(ref).eval()
    img_info = {"img_scale": torch.ones(2), "img_size": torch.tensor([[SIZE, SIZE]] * 2)}
    with torch.no_grad():
        ref_cls, ref_box = ref(images)
        ref_dets = bench(images, img_info)
        out = ours(images)
    ref_cls, ref_box = _flat(ref_cls, CLASSES), _flat(ref_box, 4)
    assert (out.cls_logits - ref_cls).abs().max() <= 1e-4
    # effdet's (ty, tx, th, tw) per anchor are our (dy, dx, dh, dw)
    assert (out.box_deltas - ref_box[..., list(BOX_ORDER)]).abs().max() <= 1e-4
    assert ref_cls.std() > 1.0 and ref_box.abs().max() < math.log(1000.0 / 16)  # no clamping

    dets = ours.predict(out, score_threshold=0.0, max_detections=ref.config.max_det_per_image)
    for ref_det, det in zip(ref_dets, dets, strict=True):
        ref_det = ref_det[ref_det[:, 4] > 0]  # effdet pads to max_det_per_image with zeros
        assert len(det["boxes"]) == len(ref_det) > 10
        # equal scores come in no defined order (NMS sorts unstably): order ties by x1
        det = {k: v[_by_score_then_x1(det["scores"], det["boxes"])] for k, v in det.items()}
        ref_det = ref_det[_by_score_then_x1(ref_det[:, 4], ref_det[:, :4])]
        torch.testing.assert_close(det["boxes"], ref_det[:, :4], atol=1e-4, rtol=0)
        torch.testing.assert_close(det["scores"], ref_det[:, 4], atol=1e-5, rtol=0)
        assert torch.equal(det["labels"], ref_det[:, 5].long() - 1)  # effdet's labels are 1-based


def test_same_padding_is_needed():
    """The tf_ layout differs from symmetric padding: the test above does see the padding."""
    variant = "tf_efficientdet_d0"
    ref = _effdet_model(variant)
    state = convert_effdet_state_dict(ref.state_dict(), variant)
    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        ref_cls = _flat(ref(images)[0], CLASSES)
        wrong = _ours(variant, state, padding="")(images).cls_logits
    assert (wrong - ref_cls).abs().max() > 1e-2


@pytest.mark.parametrize("size", [7, 8, 13, 16])
def test_same_maxpool_matches_timm(size):
    pool = effdet.efficientdet.create_pool2d("max", kernel_size=3, stride=2, padding="same")
    x = torch.randn(2, 3, size, size + 1)
    torch.testing.assert_close(downsample2x(x, "same"), pool(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="padding"):
        downsample2x(x, "tf")


def test_anchors_match_effdet():
    cfg = effdet.get_efficientdet_config("tf_efficientdet_d0")
    ref = Anchors(3, 7, cfg.num_scales, cfg.aspect_ratios, cfg.anchor_scale, (SIZE, SIZE)).boxes
    ours = AnchorGenerator([8, 16, 32, 64, 128])((SIZE, SIZE))
    torch.testing.assert_close(ours, ref[:, [1, 0, 3, 2]], atol=1e-4, rtol=0)  # yxyx -> xyxy


@pytest.mark.parametrize(
    "variant",
    [f"tf_efficientdet_d{i}" for i in range(4, 8)] + ["efficientdet_d4", "efficientdet_d5"],
)
def test_large_variants_convert(variant):
    """D4..D7 (meta device, shapes only): every tensor maps, and the configs agree."""
    cfg = effdet.get_efficientdet_config(variant)
    with torch.device("meta"):
        ref = effdet.EfficientDet(cfg, pretrained_backbone=False)
        model = build_model(EFFDET_VARIANTS[variant], num_classes=90)
    state = convert_effdet_state_dict(ref.state_dict(), variant)
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    ours = model.config
    assert (ours.backbone, ours.fpn_channels, ours.fpn_repeats, ours.head_repeats) == (
        cfg.backbone_name,
        cfg.fpn_channels,
        cfg.fpn_cell_repeats,
        cfg.box_class_repeats,
    )
    assert ours.padding == cfg.pad_type and ours.anchor_scale == cfg.anchor_scale
    assert ours.fusion == ("sum" if cfg.fpn_name == "bifpn_sum" else "fast")
    assert ours.image_size == cfg.image_size[0]


def test_state_dict_recognition():
    state = _effdet_model("tf_efficientdet_d0").state_dict()
    assert is_effdet_state_dict(state)
    wrapped = {"state_dict_ema": {f"module.model.{k}": v for k, v in state.items()}}
    wrapped["state_dict_ema"]["module.anchors.boxes"] = torch.zeros(3, 4)
    assert is_effdet_state_dict(wrapped)
    assert effdet_state_dict(wrapped).keys() == state.keys()
    ours = build_model("efficientdet_dm3", num_classes=3).state_dict()
    assert not is_effdet_state_dict(ours)
    assert not is_effdet_state_dict({"state_dict": {f"model.{k}": v for k, v in ours.items()}})


def test_class_selection_and_reinit():
    variant = "tf_efficientdet_d0"
    ref_state = _effdet_model(variant).state_dict()
    picked = convert_effdet_state_dict(ref_state, variant, class_indices=[4, 1])
    weight = ref_state["class_net.predict.conv_pw.weight"].reshape(9, CLASSES, -1)
    torch.testing.assert_close(
        picked["class_head.predict.conv_pw.weight"].reshape(9, 2, -1), weight[:, [4, 1]]
    )
    with pytest.warns(UserWarning, match="re-initialised"):
        fresh = convert_effdet_state_dict(ref_state, variant, num_classes=3)
    assert fresh["class_head.predict.conv_pw.bias"].shape == (27,)
    torch.testing.assert_close(
        fresh["box_head.predict.conv_pw.bias"], picked["box_head.predict.conv_pw.bias"]
    )


def test_import_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    variant = "tf_efficientdet_d0"
    ref = _effdet_model(variant)
    weights, out = tmp_path / "effdet.pth", tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, weights)
    code = main(
        ["import-effdet", "--variant", variant, "--weights", str(weights), "--out", str(out)]
    )
    assert code == 0 and str(out) in capsys.readouterr().out
    checkpoint = read_checkpoint(out)
    assert checkpoint["hyper_parameters"]["model"]["name"] == EFFDET_VARIANTS[variant]
    assert checkpoint["hyper_parameters"]["source"]["variant"] == variant
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items()}
    assert len(state) == len(checkpoint["state_dict"])
    model = build_model(checkpoint["hyper_parameters"]["model"]["name"], num_classes=CLASSES)
    load_state_strict(model, state, str(out))
    direct = load_effdet_checkpoint(weights, variant)
    assert all(torch.equal(direct[k], v) for k, v in state.items())


def test_errors_name_variant_key_and_shapes(tmp_path, capsys):
    state = _effdet_model("tf_efficientdet_d0").state_dict()
    with pytest.raises(ValueError, match="tf_efficientdet_d9.*tf_efficientdet_d0"):
        convert_effdet_state_dict(state, "tf_efficientdet_d9")
    key = "fpn.cell.1.fnode.2.after_combine.conv.conv_pw.weight"
    broken = {**state, key: torch.zeros(64, 32, 1, 1)}
    with pytest.raises(ValueError, match=rf"tf_efficientdet_d0.*{key}.*\(64, 32, 1, 1\).*\(64, 64"):
        convert_effdet_state_dict(broken, "tf_efficientdet_d0")
    with pytest.raises(ValueError, match="efficientdet_d1.*shape"):  # D0 weights, D1 variant
        convert_effdet_state_dict(state, "efficientdet_d1")
    with pytest.raises(ValueError, match="needs tensors the file lacks: neck.cells.2."):
        convert_effdet_state_dict(
            {k: v for k, v in state.items() if "cell.2." not in k}, "tf_efficientdet_d0"
        )
    weights = tmp_path / "broken.pth"
    torch.save(broken, weights)
    args = ["import-effdet", "--variant", "tf_efficientdet_d0", "--weights", str(weights)]
    assert main([*args, "--out", str(tmp_path / "x.ckpt")]) == 2
    assert key in capsys.readouterr().err and not (tmp_path / "x.ckpt").exists()


def test_a_recipe_teacher_can_point_at_an_effdet_file(tmp_path):
    from distill.config import load_recipe
    from distill.errors import RecipeError
    from distill.stages import load_teacher

    effdet_model = _effdet_model("tf_efficientdet_d0", num_classes=6)
    weights = tmp_path / "tf_d0.pth"
    torch.save(effdet_model.state_dict(), weights)
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    teacher_keys = [f"teacher.checkpoint={weights}", f"teacher.model.image_size={SIZE}"]
    recipe = load_recipe(quickstart, ["teacher.model.name=tf_efficientdet_d0", *teacher_keys])
    teacher = load_teacher(recipe, 6, weights)
    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        ours = teacher(images).cls_logits
        theirs = _flat(effdet_model(images)[0], 6)
    assert (ours - theirs).abs().max() < 1e-4
    with pytest.raises(RecipeError, match="class-indices.*shape mismatches: class_head"):
        load_teacher(recipe, 3, weights)  # the dataset has 3 classes, the file 6
    wrong = load_recipe(quickstart, ["teacher.model.name=efficientdet_dm2", *teacher_keys])
    with pytest.raises(RecipeError, match="not an effdet configuration"):
        load_teacher(wrong, 6, weights)


def test_coco80_class_indices_keep_the_80_annotated_categories_in_id_order(tmp_path):
    from distill.models.effdet_import import COCO80_CATEGORY_IDS

    assert len(COCO80_CATEGORY_IDS) == 80 and list(COCO80_CATEGORY_IDS) == sorted(
        set(COCO80_CATEGORY_IDS)
    )
    assert {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}.isdisjoint(COCO80_CATEGORY_IDS)
    ref = _effdet_model("tf_efficientdet_d0", num_classes=90)
    weights, out = tmp_path / "coco.pth", tmp_path / "teacher80.ckpt"
    torch.save(ref.state_dict(), weights)
    args = ["import-effdet", "--variant", "tf_efficientdet_d0", "--weights", str(weights),
            "--out", str(out), "--class-indices", "coco80"]
    assert main(args) == 0
    state = read_checkpoint(out)["state_dict"]
    bias = state["model.class_head.predict.conv_pw.bias"].reshape(9, 80)
    theirs = ref.class_net.predict.conv_pw.bias.detach().reshape(9, 90)
    assert torch.equal(bias[:, 0], theirs[:, 0])  # person: id 1, slot 0
    assert torch.equal(bias[:, 11], theirs[:, 12])  # stop sign: id 13 (12 is unused), slot 12
    assert torch.equal(bias[:, 79], theirs[:, 89])  # toothbrush: id 90, slot 89
