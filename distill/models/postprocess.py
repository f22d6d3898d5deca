"""Turn raw head outputs into per-image detections (top-k, threshold, NMS, clip)."""

from __future__ import annotations

import math

import torch
from torchvision.ops import batched_nms

from .anchors import BoxCoder


def _candidates(
    cls_logits: torch.Tensor, score_threshold: float, pre_nms_topk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image, anchor, class)`` indices of the scores to consider: per image the
    ``pre_nms_topk`` highest, of those the ones above ``score_threshold``.

    A trained detector has few scores above the threshold: they are found with one comparison
    over the logits instead of a top-k over all of them (same result: the threshold is
    monotonic); images with more candidates than ``pre_nms_topk`` take the top-k path.
    """
    batch, _, num_classes = cls_logits.shape
    threshold = None
    if 0.0 < score_threshold < 1.0:
        threshold = math.log(score_threshold / (1.0 - score_threshold))
    if threshold is not None:
        above = cls_logits > threshold
        if int(above.sum(dim=(1, 2)).max()) <= pre_nms_topk:
            return above.nonzero(as_tuple=True)
    k = min(pre_nms_topk, cls_logits.shape[1] * num_classes)
    top_logits, top_idx = cls_logits.reshape(batch, -1).topk(k, dim=1)
    image = torch.arange(batch, device=cls_logits.device).unsqueeze(1).expand(-1, k)
    keep = top_logits > threshold if threshold is not None else torch.ones_like(top_idx, dtype=bool)
    top_idx, image = top_idx[keep], image[keep]
    return image, top_idx // num_classes, top_idx % num_classes


def postprocess(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    max_detections: int = 100,
    pre_nms_topk: int = 5000,
    nms_iou: float = 0.5,
    coder: BoxCoder | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image as dicts with ``boxes`` (xyxy, clipped), ``scores``, ``labels``.

    Per image: the ``pre_nms_topk`` best (anchor, class) scores, those above
    ``score_threshold``, class-wise NMS at ``nms_iou``, the ``max_detections`` best. Scores are
    sorted in decreasing order. One NMS call serves the whole batch (boxes of different images
    never suppress each other).
    """
    coder = coder or BoxCoder()
    batch, _, num_classes = cls_logits.shape
    cls_logits = cls_logits.detach()
    image, anchor, labels = _candidates(cls_logits, score_threshold, pre_nms_topk)
    scores = cls_logits[image, anchor, labels].float().sigmoid()
    keep = scores > score_threshold  # exact on the scores (the logit test may round)
    image, anchor, labels, scores = image[keep], anchor[keep], labels[keep], scores[keep]
    boxes = coder.decode(box_deltas.detach()[image, anchor].float(), anchors[anchor])
    h, w = image_size
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    # float64 boxes: batched_nms may offset each (image, class) group by up to B*K image sides
    groups = image * num_classes + labels
    kept = batched_nms(boxes.double(), scores.double(), groups, nms_iou)  # by decreasing score
    kept = kept[torch.sort(image[kept], stable=True).indices]  # by image, then score
    per_image = torch.bincount(image[kept], minlength=batch).tolist()
    results = []
    for chosen in torch.split(kept, per_image):
        chosen = chosen[:max_detections]
        results.append({"boxes": boxes[chosen], "scores": scores[chosen], "labels": labels[chosen]})
    return results
