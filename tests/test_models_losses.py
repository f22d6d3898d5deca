"""Assigner, BiFPN fusion, losses and post-processing on hand-made inputs."""

import math

import pytest
import torch
from torchvision.ops import batched_nms

from distill.models.anchors import BoxCoder
from distill.models.assigner import IGNORED, NEGATIVE, assign, pad_targets
from distill.models.bifpn import WeightedFusion, bifpn_nodes
from distill.models.losses import detection_loss
from distill.models.postprocess import postprocess

# IoU with the box [0, 0, 10, 10]: 1.0, 0.9, 0.45, 0.3, 0, 0
ANCHORS = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],
        [0.0, 0.0, 10.0, 9.0],
        [0.0, 0.0, 10.0, 4.5],
        [0.0, 0.0, 10.0, 3.0],
        [50.0, 50.0, 60.0, 60.0],
        [100.0, 100.0, 110.0, 110.0],
    ]
)
N, IG = NEGATIVE, IGNORED


def test_assigner_hand_made():
    targets = [
        # one box, IoU 0.47 with anchor 4 (ignored band) but forced; the padded row must not match
        {"boxes": torch.tensor([[48.0, 48.0, 58.0, 58.0]]), "labels": torch.tensor([0])},
        # positives + ignored + negative; the third box has IoU 0.16 at best and is forced
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [48, 48, 58, 58], [100, 100, 104, 104]]),
            "labels": torch.tensor([1, 0, 1]),
        },
    ]
    padded = pad_targets(targets)
    assert padded.boxes.shape == (2, 3, 4)
    assert padded.valid.tolist() == [[True, False, False], [True, True, True]]
    matches = assign(ANCHORS, padded.boxes, padded.valid)
    assert matches.tolist() == [[N, N, N, N, 0, N], [0, 0, IG, N, 1, 2]]
    unforced = assign(ANCHORS, padded.boxes, padded.valid, force_match=False)
    assert unforced.tolist() == [[N, N, N, N, IG, N], [0, 0, IG, N, IG, N]]


def test_assigner_empty_image():
    padded = pad_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert assign(ANCHORS, padded.boxes, padded.valid).tolist() == [[N] * 6]


def _inputs():
    return [torch.full((1, 2, 2, 2), v) for v in (1.0, 2.0, 4.0)]


def test_fusion_fast_normalized():
    fusion = WeightedFusion(3, "fast")
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([2.0, -1.0, 1.0]))
    w = fusion.normalized_weights()
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0, 1.0]) / (3.0 + 1e-4))
    assert abs(w.sum().item() - 1.0) < 1e-4
    torch.testing.assert_close(fusion(_inputs()), torch.full((1, 2, 2, 2), 6.0 / 3.0001))


def test_fusion_softmax():
    fusion = WeightedFusion(3, "softmax")
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([0.0, math.log(2.0), math.log(5.0)]))
    w = fusion.normalized_weights()
    torch.testing.assert_close(w, torch.tensor([1.0, 2.0, 5.0]) / 8.0)
    torch.testing.assert_close(fusion(_inputs()), torch.full((1, 2, 2, 2), 25.0 / 8.0))


def test_fusion_sum_and_bad_mode():
    fusion = WeightedFusion(3, "sum")
    assert fusion.normalized_weights() is None and len(list(fusion.parameters())) == 0
    torch.testing.assert_close(fusion(_inputs()), torch.full((1, 2, 2, 2), 7.0))
    with pytest.raises(ValueError, match="fusion"):
        WeightedFusion(2, "max")


def test_bifpn_node_layout():
    # effdet's bifpn_config for P3..P7: 4 top-down nodes then 4 bottom-up nodes
    assert bifpn_nodes(5) == [
        (3, [3, 4]),
        (2, [2, 5]),
        (1, [1, 6]),
        (0, [0, 7]),
        (1, [1, 7, 8]),
        (2, [2, 6, 9]),
        (3, [3, 5, 10]),
        (4, [4, 11]),
    ]


def _one_box_target():
    return pad_targets([{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}])


def test_detection_loss_hand_computed():
    cls_logits = torch.zeros(1, 6, 2)
    box_deltas = torch.zeros(1, 6, 4)
    out = detection_loss(cls_logits, box_deltas, ANCHORS, _one_box_target(), neg_iou=0.4)
    # matches: [0, 0, ignored, neg, neg, neg]; N = 2 positives + 1
    c = 0.5**1.5 * math.log(2.0)  # focal term at p = 0.5 without alpha
    cls_sum = 2 * (0.25 * c + 0.75 * c) + 3 * (2 * 0.75 * c)
    # anchor 0 is the box itself (zero deltas); anchor 1 [0, 0, 10, 9]: dy = 0.5 / 9, dh = log(10/9)
    dy, dh = 0.5 / 9, math.log(10 / 9)
    huber = 0.5 * dy**2 + 0.1 * (dh - 0.05)
    assert out["cls_loss"].item() == pytest.approx(cls_sum / 3, rel=1e-5)
    assert out["box_loss"].item() == pytest.approx(huber / 12, rel=1e-4)
    assert out["loss"].item() == pytest.approx(cls_sum / 3 + 50 * huber / 12, rel=1e-4)
    # the default (effdet's) has no ignored band: anchor 2 (IoU 0.45) is a negative
    default = detection_loss(cls_logits, box_deltas, ANCHORS, _one_box_target())
    assert default["cls_loss"].item() == pytest.approx((cls_sum + 2 * 0.75 * c) / 3, rel=1e-5)


def test_perfect_prediction_beats_random():
    targets = _one_box_target()
    perfect_cls = torch.full((1, 6, 2), -12.0)
    perfect_cls[0, :2, 1] = 12.0
    perfect_box = torch.zeros(1, 6, 4)
    perfect_box[0, :2] = BoxCoder().encode(torch.tensor([[0.0, 0, 10, 10]]), ANCHORS[:2])
    g = torch.Generator().manual_seed(0)
    rand_cls, rand_box = torch.randn(1, 6, 2, generator=g), torch.randn(1, 6, 4, generator=g)
    perfect = detection_loss(perfect_cls, perfect_box, ANCHORS, targets)
    rand = detection_loss(rand_cls, rand_box, ANCHORS, targets)
    assert perfect["box_loss"].item() < 1e-6
    assert perfect["cls_loss"].item() < 1e-3 < rand["cls_loss"].item()
    assert perfect["loss"] < rand["loss"]


def test_postprocess_nms_sort_clip():
    anchors = torch.tensor(
        [[-5.0, -5, 20, 20], [0, 0, 20, 20], [1, 0, 21, 20], [40, 40, 60, 60], [30, 30, 90, 90]]
    )
    logits = torch.full((2, 5, 3), -10.0)
    logits[0, 0, 2] = 3.0  # kept, clipped to the image
    logits[0, 1, 0] = 2.0  # kept: other class than anchor 0
    logits[0, 2, 0] = 1.0  # suppressed by anchor 1 (IoU 0.9, same class)
    logits[0, 3, 1] = 0.0  # kept
    logits[0, 4, 1] = -1.0  # IoU with anchor 3 is 0.11: kept
    deltas = torch.zeros(2, 5, 4)
    res = postprocess(logits, deltas, anchors, (64, 64), score_threshold=0.05, max_detections=3)
    assert len(res) == 2 and len(res[1]["boxes"]) == 0
    r = res[0]
    assert r["labels"].tolist() == [2, 0, 1]
    torch.testing.assert_close(r["scores"], torch.sigmoid(torch.tensor([3.0, 2.0, 0.0])))
    torch.testing.assert_close(r["boxes"][0], torch.tensor([0.0, 0, 20, 20]))
    all_kept = postprocess(logits, deltas, anchors, (64, 64), max_detections=100)[0]
    assert len(all_kept["boxes"]) == 4
    torch.testing.assert_close(all_kept["boxes"][3], torch.tensor([30.0, 30, 64, 64]))


def _reference_postprocess(logits, deltas, anchors, size, threshold, topk, max_det):
    """Per image: top-k over all scores, threshold, class-wise NMS (the plain definition)."""
    results = []
    for cls, box in zip(logits, deltas):
        top, idx = cls.reshape(-1).topk(min(topk, cls.numel()))
        anchor, label = idx // cls.shape[1], idx % cls.shape[1]
        scores = top.sigmoid()
        keep = scores > threshold
        boxes = BoxCoder().decode(box[anchor[keep]], anchors[anchor[keep]]).clamp(0, size)
        kept = batched_nms(boxes, scores[keep], label[keep], 0.5)[:max_det]
        results.append((boxes[kept], scores[keep][kept], label[keep][kept]))
    return results


@pytest.mark.parametrize("max_det", [25, 90])  # 90: NMS over the best 360 keeps fewer than 90
@pytest.mark.parametrize("topk", [40, 5000])  # top-k path (many above threshold), mask path
def test_postprocess_matches_plain_definition(topk, max_det):
    gen = torch.Generator().manual_seed(0)
    centers = torch.rand(300, 2, generator=gen) * 12  # crowded: NMS suppresses most boxes
    anchors = torch.cat([centers - 8, centers + 8], dim=1)
    logits = torch.randn(3, 300, 4, generator=gen) * 2 - 3
    deltas = torch.randn(3, 300, 4, generator=gen) * 0.2
    ours = postprocess(logits, deltas, anchors, (100, 100), 0.05, max_det, topk)
    ref = _reference_postprocess(logits, deltas, anchors, 100, 0.05, topk, max_det)
    assert sum(len(o["boxes"]) for o in ours) > 30
    for det, (boxes, scores, labels) in zip(ours, ref, strict=True):
        torch.testing.assert_close(det["scores"], scores)
        torch.testing.assert_close(det["boxes"], boxes)
        assert torch.equal(det["labels"], labels)
