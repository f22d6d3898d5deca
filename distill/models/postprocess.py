"""Turn raw head outputs into per-image detections (top-k, threshold, NMS, clip)."""

from __future__ import annotations

import math
from collections.abc import Callable

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
    monotonic). When an image of the batch has more than ``pre_nms_topk`` of them, the batch
    takes the top-k path.
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


def _nms_best_first(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float, wanted: int
) -> torch.Tensor:
    """Class-wise NMS of one image's candidates (sorted by decreasing score) until ``wanted``
    survive: greedy NMS decides a box by higher-scored boxes alone, so NMS over the best
    ``m`` candidates is exact for them; ``m`` starts at ``4 * wanted`` and grows as needed.
    float64: ``batched_nms`` offsets each class by up to K image sides, past float32 precision."""
    count = len(boxes)
    m = min(count, 4 * wanted)
    while True:
        kept = batched_nms(boxes[:m].double(), scores[:m].double(), labels[:m], iou)
        if len(kept) >= wanted or m == count:
            return kept[:wanted]
        m = min(count, 4 * m)


def postprocess(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    priors: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    max_detections: int = 100,
    pre_nms_topk: int = 5000,
    nms_iou: float = 0.5,
    decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image as dicts with ``boxes`` (xyxy, clipped), ``scores``, ``labels``.

    Per image: the ``pre_nms_topk`` best (anchor, class) scores, those above
    ``score_threshold``, class-wise NMS at ``nms_iou``, the ``max_detections`` best. Scores are
    sorted in decreasing order. ``decode(box outputs, priors)`` turns the kept predictions'
    box outputs into xyxy boxes (default: anchor deltas, ``BoxCoder().decode``).
    """
    decode = decode or BoxCoder().decode
    batch = cls_logits.shape[0]
    cls_logits = cls_logits.detach()
    image, anchor, labels = _candidates(cls_logits, score_threshold, pre_nms_topk)
    scores = cls_logits[image, anchor, labels].float().sigmoid()
    keep = scores > score_threshold  # exact on the scores (the logit test may round)
    order = torch.argsort(scores[keep], descending=True, stable=True)
    order = order[torch.argsort(image[keep][order], stable=True)]  # by image, then score
    image, anchor, labels, scores = (t[keep][order] for t in (image, anchor, labels, scores))
    boxes = decode(box_deltas.detach()[image, anchor].float(), priors[anchor])
    h, w = image_size
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    results, start = [], 0
    for count in torch.bincount(image, minlength=batch).tolist():
        block = slice(start, start + count)
        kept = _nms_best_first(boxes[block], scores[block], labels[block], nms_iou, max_detections)
        kept = kept + start
        results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]})
        start += count
    return results
