"""GFL parts (QFL, DFL, the integral decode) and AlignOTA on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from distill.models.align_ota import align_ota_assign, centre_prior, dynamic_k_match
from distill.models.gfl import (
    box_to_distance,
    dfl_integral,
    distance_to_box,
    distribution_focal_loss,
    giou_loss,
    quality_focal_loss,
)


def test_quality_focal_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # sigmoid 0.5, 0.75 / 0.5, 0.5
    labels, quality = torch.tensor([1, -1]), torch.tensor([0.5, 0.9])
    loss = quality_focal_loss(logits, labels, quality)
    # positive row: class 0 has target 0: BCE ln 2 x 0.5^2; class 1 target 0.5: BCE
    # -(0.5 ln 0.75 + 0.5 ln 0.25) x |0.75 - 0.5|^2
    pos = math.log(2) * 0.25 + -(0.5 * math.log(0.75) + 0.5 * math.log(0.25)) * 0.0625
    neg = 2 * math.log(2) * 0.25  # background: both classes against 0 (its quality unused)
    torch.testing.assert_close(loss, torch.tensor([pos, neg]))


def test_quality_focal_loss_vanishes_at_the_target_and_grows_away_from_it():
    labels, quality = torch.tensor([0]), torch.tensor([0.8])
    at = torch.tensor([[math.log(0.8 / 0.2), -30.0]])
    assert quality_focal_loss(at, labels, quality).item() < 1e-9
    away = torch.tensor([[0.0, -30.0]])
    assert quality_focal_loss(away, labels, quality).item() > 0.05


def test_distribution_focal_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0, 0.0]])  # softmax 1/7, 3/7, 1/7...
    loss = distribution_focal_loss(logits, torch.tensor([1.25]))
    expected = 0.75 * -math.log(3 / 7) + 0.25 * -math.log(1 / 7)  # bins 1 and 2
    torch.testing.assert_close(loss, torch.tensor([expected]))
    # an integer target puts all the weight on its own bin
    torch.testing.assert_close(distribution_focal_loss(logits, torch.tensor([1.0])),
                               torch.tensor([-math.log(3 / 7)]))


def test_integral_decode_is_the_expected_bin():
    side = torch.tensor([0.0, math.log(3.0), 0.0, 0.0, 0.0])  # reg_max 4
    sharp = torch.full((5,), -50.0)
    sharp[3] = 50.0
    out = dfl_integral(torch.cat([side, sharp, side, sharp])[None], reg_max=4)
    torch.testing.assert_close(out, torch.tensor([[12 / 7, 3.0, 12 / 7, 3.0]]))


def test_distance_box_round_trip_and_clamp():
    points = torch.tensor([[10.0, 20.0]])
    boxes = torch.tensor([[4.0, 15.0, 30.0, 21.0]])
    dist = box_to_distance(points, boxes)
    torch.testing.assert_close(dist, torch.tensor([[6.0, 5.0, 20.0, 1.0]]))
    torch.testing.assert_close(distance_to_box(points, dist), boxes)
    torch.testing.assert_close(box_to_distance(points, boxes, max_distance=8.0),
                               torch.tensor([[6.0, 5.0, 7.9, 1.0]]))


def test_giou_loss():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 3.0, 1.0]])
    # identical: 0; disjoint unit boxes 1 apart: IoU 0, hull 3, union 2 -> 1 - (0 - 1/3)
    torch.testing.assert_close(giou_loss(a, b), torch.tensor([0.0, 4 / 3]))


def _grid(size: int = 64, stride: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(size // stride).float() * stride + stride / 2
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    centres = torch.stack([x, y], -1).reshape(-1, 2)
    return centres, torch.full((len(centres),), float(stride))


def _at(centres: torch.Tensor, x: float, y: float) -> int:
    return int(((centres - torch.tensor([x, y])).abs().sum(1) == 0).nonzero())


def test_centre_prior_candidates():
    centres, strides = _grid()
    gt = torch.tensor([[40.0, 40.0, 64.0, 64.0]])  # centre (52, 52), radius 2.5 x 8 = 20
    candidate, in_both = centre_prior(centres, strides, gt, radius=2.5)
    assert candidate[_at(centres, 44, 44)] and in_both[_at(centres, 44, 44), 0]
    # inside the centre region, outside the box: a candidate, but not "in both"
    assert candidate[_at(centres, 36, 36)] and not in_both[_at(centres, 36, 36), 0]
    assert not candidate[_at(centres, 4, 4)] and not candidate[_at(centres, 28, 60)]


def test_align_ota_assigns_the_k_cheapest_candidates_per_box():
    centres, strides = _grid()
    box_a, box_b = [0.0, 0.0, 32.0, 32.0], [40.0, 40.0, 64.0, 64.0]
    gt = torch.tensor([box_a, box_b])
    pred = torch.cat([centres - 1, centres + 1], 1)  # 2 px boxes: IoU ~0 with both
    for x, y, box in [(4, 4, box_a), (12, 12, box_a), (60, 4, box_a),
                      (44, 44, box_b), (52, 52, box_b), (60, 60, box_b)]:
        pred[_at(centres, x, y)] = torch.tensor(box)
    scores = torch.full((len(centres), 2), 0.01)
    result = align_ota_assign(scores, centres, strides, pred, gt, torch.tensor([0, 1]))
    # dynamic k: A's best ten IoUs are 1, 1 and eight 2x2 boxes inside it (1/256) -> k = 2;
    # B's are 1, 1, 1 and six small ones -> k = 3. (60, 4) predicts A exactly but lies in
    # neither box nor centre region: never a candidate.
    expected = torch.full((len(centres),), -1)
    for x, y, g in [(4, 4, 0), (12, 12, 0), (44, 44, 1), (52, 52, 1), (60, 60, 1)]:
        expected[_at(centres, x, y)] = g
    assert torch.equal(result.gt, expected)
    torch.testing.assert_close(result.iou[result.positive], torch.ones(5))
    assert result.iou[~result.positive].abs().sum() == 0


def test_dynamic_k_and_conflicts():
    ious = torch.tensor([[0.9, 0.1], [0.8, 0.3], [0.5, 0.9], [0.0, 0.8]])  # k = 2 and 2
    cost = torch.tensor([[1.0, 9.0], [2.0, 3.0], [1.5, 0.5], [9.0, 1.0]])
    # box 0 takes points 0, 2; box 1 takes 2, 3; point 2 keeps its cheaper box 1
    assert dynamic_k_match(cost, ious).tolist() == [0, -1, 1, 1]
    # k is at least 1 even when every IoU is small
    assert dynamic_k_match(cost, ious * 0.01).tolist() == [0, -1, 1, -1]


def test_align_ota_without_boxes_is_all_background():
    centres, strides = _grid()
    pred = torch.cat([centres - 4, centres + 4], 1)
    result = align_ota_assign(torch.rand(len(centres), 3), centres, strides, pred,
                              torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert not result.positive.any()


@pytest.mark.parametrize("confident", [(4, 4), (12, 12)])
def test_the_class_cost_breaks_an_iou_tie(confident):
    centres, strides = _grid()
    gt = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    pred = torch.cat([centres - 1, centres + 1], 1)
    for x, y in [(4, 4), (12, 12)]:  # IoU 0.8 each: 1.6 + small -> k = 1
        pred[_at(centres, x, y)] = torch.tensor([0.0, 0.0, 32.0, 25.6])
    scores = torch.full((len(centres), 2), 0.01)
    scores[_at(centres, *confident), 1] = 0.8  # right class at the target quality
    result = align_ota_assign(scores, centres, strides, pred, gt, torch.tensor([1]))
    assert result.positive.nonzero().flatten().tolist() == [_at(centres, *confident)]
    torch.testing.assert_close(result.iou[result.positive], torch.tensor([0.8]))
