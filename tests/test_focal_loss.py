"""The fused focal loss equals torchvision's; the detection loss equals effdet's (the peer)."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from distill.models import focal_loss
from distill.models.anchors import AnchorGenerator
from distill.models.assigner import pad_targets
from distill.models.focal_loss import sigmoid_focal_loss_sum
from distill.models.losses import detection_loss


def _reference(logits, labels, weights, alpha, gamma):
    onehot = F.one_hot(labels.clamp(min=0), logits.shape[-1]).to(logits.dtype)
    onehot = onehot * (labels >= 0).unsqueeze(-1)
    per = sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction="none").sum(-1)
    return (per * weights).sum()


@pytest.mark.parametrize("gamma", [1.5, 2.0, 0.0])
@pytest.mark.parametrize("chunk", [1 << 19, 16])  # one chunk, and many chunks of 2 rows
def test_focal_loss_value_and_gradient_match_torchvision(gamma, chunk, monkeypatch):
    monkeypatch.setattr(focal_loss, "CPU_CHUNK_ELEMENTS", chunk)
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 40, 7, generator=gen, dtype=torch.float64) * 5).requires_grad_()
    labels = torch.randint(-1, 7, (3, 40), generator=gen)
    weights = torch.rand(3, 40, generator=gen, dtype=torch.float64)
    weights[0, :10] = 0.0
    ours = sigmoid_focal_loss_sum(logits, labels, weights, 0.25, gamma)
    ref = _reference(logits, labels, weights, 0.25, gamma)
    (g_ours,) = torch.autograd.grad(ours * 3.0, logits)
    (g_ref,) = torch.autograd.grad(ref * 3.0, logits)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    assert (g_ours[0, :10] == 0).all()  # zero weight: no gradient


def test_focal_loss_without_gradient_and_bad_shapes():
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([[0, -1, 2, -1, -1], [1, 1, -1, -1, 0]])
    value = sigmoid_focal_loss_sum(logits, labels, torch.ones(2, 5))
    torch.testing.assert_close(value, _reference(logits, labels, torch.ones(2, 5), 0.25, 1.5))
    with pytest.raises(ValueError, match=r"labels and weights of shape \(2, 5\)"):
        sigmoid_focal_loss_sum(logits, labels[:, :4], torch.ones(2, 4))


def test_detection_loss_equals_effdet():
    """Same raw outputs and boxes: effdet's AnchorLabeler + DetectionLoss give our loss."""
    effdet = pytest.importorskip("effdet")
    from effdet.anchors import AnchorLabeler, Anchors
    from effdet.loss import DetectionLoss

    size, classes = 256, 5
    cfg = effdet.get_efficientdet_config("efficientdet_d0")
    cfg.num_classes, cfg.image_size = classes, (size, size)
    gen = torch.Generator().manual_seed(0)
    boxes = [torch.tensor([[10.0, 20, 90, 120], [100, 100, 140, 130], [30, 150, 250, 250]]),
             torch.tensor([[5.0, 5, 40, 60]])]
    labels = [torch.tensor([0, 4, 2]), torch.tensor([3])]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    anchors = AnchorGenerator([8, 16, 32, 64, 128])((size, size))
    cls = torch.randn(2, anchors.shape[0], classes, generator=gen) - 3.0
    box = torch.randn(2, anchors.shape[0], 4, generator=gen) * 0.3
    ours = detection_loss(cls, box, anchors, pad_targets(targets))

    ref_anchors = Anchors.from_config(cfg)
    torch.testing.assert_close(ref_anchors.boxes[:, [1, 0, 3, 2]], anchors)
    gt = torch.full((2, 3, 4), -1.0)
    gt_cls = torch.full((2, 3), -1.0)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        gt[i, : len(b)] = b[:, [1, 0, 3, 2]]
        gt_cls[i, : len(b)] = lab.float() + 1  # effdet's classes are 1-based
    cls_t, box_t, num_pos = AnchorLabeler(ref_anchors, classes).batch_label_anchors(gt, gt_cls)
    cls_levels, box_levels, start = [], [], 0
    for level in range(5):
        h = w = size // 2 ** (3 + level)
        n = h * w * 9
        cls_levels.append(cls[:, start:start + n].reshape(2, h, w, -1).permute(0, 3, 1, 2))
        # effdet predicts (ty, tx, th, tw) per anchor
        b = box[:, start:start + n][..., [1, 0, 3, 2]]
        box_levels.append(b.reshape(2, h, w, -1).permute(0, 3, 1, 2))
        start += n
    loss, cls_loss, box_loss = DetectionLoss(cfg)(cls_levels, box_levels, cls_t, box_t, num_pos)
    torch.testing.assert_close(ours["cls_loss"], cls_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["box_loss"], box_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours["loss"], loss, rtol=1e-5, atol=1e-6)
