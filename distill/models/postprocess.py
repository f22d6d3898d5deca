"""Turn raw head outputs into per-image detections (top-k, threshold, NMS, clip)."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from .anchors import BoxCoder


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

    Scores are sorted in decreasing order and at most ``max_detections`` are kept.
    """
    coder = coder or BoxCoder()
    batch, num_anchors, num_classes = cls_logits.shape
    k = min(pre_nms_topk, num_anchors * num_classes)
    top_logits, top_idx = cls_logits.detach().reshape(batch, -1).topk(k, dim=1)
    anchor_idx = top_idx // num_classes
    labels = top_idx % num_classes
    scores = top_logits.float().sigmoid()
    deltas = torch.gather(
        box_deltas.detach().float(), 1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4)
    )
    boxes = coder.decode(deltas, anchors[anchor_idx])
    h, w = image_size
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h)
    results = []
    for i in range(batch):
        keep = scores[i] > score_threshold
        b, s, lab = boxes[i][keep], scores[i][keep], labels[i][keep]
        kept = batched_nms(b, s, lab, nms_iou)[:max_detections]  # sorted by score
        results.append({"boxes": b[kept], "scores": s[kept], "labels": lab[kept]})
    return results
