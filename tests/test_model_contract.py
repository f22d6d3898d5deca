"""The model contract holds without anchors: a minimal anchor-free family written against
``distill.models.Detector`` alone trains, predicts, exports and distils like the built-ins."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from detector_fixtures import two_image_batch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from distill.config import DistillConfig
from distill.distillation import TERMS
from distill.distillation.terms import BuildContext, TermInputs, resolve_terms
from distill.errors import RecipeError
from distill.export import ExportGraph
from distill.info import flops_breakdown
from distill.models import Detector, build_model
from distill.models.anchors import level_sizes
from distill.models.fpn import FPN


class TinyBackbone(nn.Module):
    """Five stride-2 convs; the maps at strides 8, 16, 32."""

    strides, channels = [8, 16, 32], [16, 16, 16]

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 16, 16, 3, 2, 1) for i in range(5))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i >= 2:
                outs.append(x)
        return outs


class PointDetector(Detector):
    """One point per location, FCOS-style (left, top, right, bottom) distances in strides."""

    TAPS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, num_classes: int, image_size: int = 128) -> None:
        backbone = TinyBackbone()
        neck = FPN(backbone.channels, 16, num_extra=0)
        super().__init__(backbone, neck, num_classes, image_size, backbone.strides,
                         neck.out_channels)
        self.cls = nn.Conv2d(16, num_classes, 3, padding=1)
        self.box = nn.Conv2d(16, 4, 3, padding=1)
        nn.init.constant_(self.cls.bias, -4.0)

    def forward_head(self, feats, taps):
        def flat(x):
            return x.permute(0, 2, 3, 1).flatten(1, 2)

        return (torch.cat([flat(self.cls(f)) for f in feats], 1),
                torch.cat([flat(self.box(f)) for f in feats], 1), {})

    def priors(self, image_shape, device):
        cells = []
        for stride, (h, w) in zip(self.strides, level_sizes(image_shape, self.strides)):
            y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            corner = torch.stack([x, y, x, y], -1).reshape(-1, 4).float() * stride
            cells.append(corner + torch.tensor([0.0, 0.0, 1.0, 1.0]) * stride)
        return torch.cat(cells).to(device)

    def decode_boxes(self, box_out, priors):
        centre = (priors[..., :2] + priors[..., 2:]) / 2
        side = (priors[..., 2:] - priors[..., :2]).repeat(*([1] * (priors.dim() - 1)), 2)
        dist = box_out.clamp(max=6.0).exp() * side
        return torch.cat([centre - dist[..., :2], centre + dist[..., 2:]], -1)

    def prediction_signature(self):
        return ("points", 1)

    def loss(self, output, targets, across_ranks=False):
        priors = self.priors(self.output_shape(output), output.cls_logits.device)
        centre = (priors[:, :2] + priors[:, 2:]) / 2
        cls_t = torch.zeros_like(output.cls_logits)
        box_loss, positives = output.cls_logits.new_zeros(()), 0
        for b, target in enumerate(targets):
            gt = target["boxes"]
            inside = ((centre[:, None] > gt[None, :, :2]) & (centre[:, None] < gt[None, :, 2:]))
            inside = inside.all(-1)  # [N, G]: the point lies in the box
            iou = box_iou(priors, gt).masked_fill(~inside, -1)
            best, which = iou.max(1)
            pos = best > 0
            cls_t[b, pos, target["labels"][which[pos]]] = 1.0
            boxes = self.decode_boxes(output.box_deltas[b, pos], priors[pos])
            box_loss = box_loss + generalized_box_iou_loss(boxes, gt[which[pos]], "sum")
            positives += int(pos.sum())
        norm = max(positives, 1)
        cls_loss = sigmoid_focal_loss(output.cls_logits, cls_t, reduction="sum") / norm
        box_loss = box_loss / norm
        return {"loss": cls_loss + box_loss, "cls_loss": cls_loss, "box_loss": box_loss}


def test_an_anchor_free_family_trains_predicts_and_exports():
    torch.manual_seed(0)
    model, (images, targets) = PointDetector(num_classes=3), two_image_batch()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model.loss(model(images), targets)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out.cls_logits.shape == (2, 16 * 16 + 8 * 8 + 4 * 4, 3)
    detections = model.predict(out, score_threshold=0.05)
    best = detections[1]
    assert best["labels"][0] == 1 and box_iou(best["boxes"][:1], targets[1]["boxes"]) > 0.5
    graph = ExportGraph(model, 128, nms=True).eval()
    with torch.no_grad():
        boxes, scores, labels, image = graph(images)
    mine = boxes[image == 1][: len(best["boxes"])]
    torch.testing.assert_close(mine, best["boxes"], rtol=1e-4, atol=1e-3)


def _pair():
    student = PointDetector(num_classes=3)
    teacher = build_model("efficientdet_dm3", num_classes=3).eval()
    return BuildContext(student, teacher, 128, 128)


def test_feature_terms_pair_an_anchor_free_student_with_an_anchor_teacher():
    ctx, (images, targets) = _pair(), two_image_batch()
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": "feature", "loss": "cwd"}]))
    term = TERMS.get("feature")(cfg, ctx)
    assert term.strides == [8, 16, 32]  # the student's levels; the teacher's P6/P7 unused
    with torch.no_grad():
        t_out = ctx.teacher(images)
    value = term(TermInputs(ctx.student(images), t_out, targets, (128, 128)))["total"]
    value.backward()
    assert ctx.student.neck.output[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ctx.teacher.parameters())


@pytest.mark.parametrize("kind,message", [
    ("prediction", r"anchors / points per location \('points', 1\) differ from the teacher's"
                   r" \('anchors'.*PointDetector student, efficientdet_\w+ \(AnchorDetector\) "
                   r"teacher.* a feature term .* does"),
    ("crosskd", r"reads the student's \['box_hidden', 'cls_hidden'\], which a PointDetector "
                r"does not offer"),
])
def test_prediction_terms_refuse_a_pair_they_cannot_map(kind, message):
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": kind}]))
    with pytest.raises(RecipeError, match=message):
        TERMS.get(kind)(cfg, _pair())


def test_taps_are_checked_by_name():
    with pytest.raises(ValueError, match=r"no tap\(s\) \['cls_hidden'\]; it offers none"):
        PointDetector(3)(torch.rand(1, 3, 64, 64), taps=("cls_hidden",))
    teacher = build_model("efficientdet_dm3", num_classes=3).eval()
    with torch.no_grad():
        out = teacher(torch.rand(1, 3, 128, 128), taps=("box_hidden",))
    assert list(out.taps) == ["box_hidden"] and len(out.taps["box_hidden"]) == 5


def test_flops_breakdown_measures_a_head_without_per_level_towers_whole():
    model = PointDetector(num_classes=3)
    info = flops_breakdown(model, (128, 128))
    head = info["components"]["head"]
    assert head["levels"] == [] and head["flops"] > 0
    assert head["params"] == sum(p.numel() for p in (*model.cls.parameters(),
                                                     *model.box.parameters()))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 128, 128))
    assert info["flops"] == counter.get_total_flops()
