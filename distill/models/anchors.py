"""Multi-level anchors (EfficientDet / effdet layout) and the Faster R-CNN box coder."""

from __future__ import annotations

import math

import torch

DEFAULT_ASPECTS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


def level_sizes(image_size: tuple[int, int], strides: list[int]) -> list[tuple[int, int]]:
    """Feature map size per stride, halving with ceil like stride-2 convs and pools do."""
    h, w = image_size
    sizes, cur = [], 1
    for stride in strides:
        while cur < stride:
            h, w, cur = (h + 1) // 2, (w + 1) // 2, cur * 2
        sizes.append((h, w))
    return sizes


class AnchorGenerator:
    """Anchors over levels, then locations (row-major), then (octave outer, aspect inner).

    Each level of stride ``s`` has ``num_scales * len(aspect_ratios)`` anchors per location
    centred at ``((j + 0.5) s, (i + 0.5) s)`` with size ``anchor_scale * s * 2**(o / num_scales)``
    times ``(aspect_x, aspect_y)``. Results are cached per (image size, device).
    """

    def __init__(
        self,
        strides: list[int],
        num_scales: int = 3,
        aspect_ratios: tuple[tuple[float, float], ...] = DEFAULT_ASPECTS,
        anchor_scale: float = 4.0,
    ) -> None:
        self.strides = list(strides)
        self.num_scales = num_scales
        self.aspect_ratios = tuple(tuple(a) for a in aspect_ratios)
        self.anchor_scale = anchor_scale
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per location."""
        return self.num_scales * len(self.aspect_ratios)

    def _shapes(self) -> torch.Tensor:
        """Half widths/heights ``[num_anchors, 2]`` of one location for stride 1."""
        half = []
        for octave in range(self.num_scales):
            base = self.anchor_scale * 2 ** (octave / self.num_scales)
            for ax, ay in self.aspect_ratios:
                half.append((base * ax / 2.0, base * ay / 2.0))
        return torch.tensor(half, dtype=torch.float64)

    def __call__(
        self, image_size: tuple[int, int], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Anchors ``[A, 4]`` xyxy in pixels for an input of ``image_size`` (h, w)."""
        key = (int(image_size[0]), int(image_size[1]), str(device))
        if key not in self._cache:
            self._cache[key] = self._generate(key[:2]).to(device)
        return self._cache[key]

    def _generate(self, image_size: tuple[int, int]) -> torch.Tensor:
        half = self._shapes()
        out = []
        for stride, (h, w) in zip(self.strides, level_sizes(image_size, self.strides), strict=True):
            cy = (torch.arange(h, dtype=torch.float64) + 0.5) * stride
            cx = (torch.arange(w, dtype=torch.float64) + 0.5) * stride
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centers = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)
            sizes = half.unsqueeze(0) * stride
            boxes = torch.cat([centers - sizes, centers + sizes], dim=-1)
            out.append(boxes.reshape(-1, 4))
        return torch.cat(out).float()


class BoxCoder:
    """Faster R-CNN box coding (dx, dy, dw, dh) with unit weights, as effdet does."""

    def __init__(self, clamp: float = math.log(1000.0 / 16), eps: float = 1e-8) -> None:
        self.clamp = clamp
        self.eps = eps

    @staticmethod
    def _cxcywh(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x1, y1, x2, y2 = boxes.unbind(-1)
        # centres as effdet computes them, so decoding imported models matches it bit for bit
        return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Deltas ``[..., 4]`` that turn ``anchors`` into ``boxes`` (both xyxy)."""
        cx, cy, w, h = self._cxcywh(boxes)
        acx, acy, aw, ah = self._cxcywh(anchors)
        aw, ah = aw + self.eps, ah + self.eps
        dx, dy = (cx - acx) / aw, (cy - acy) / ah
        dw, dh = torch.log((w + self.eps) / aw), torch.log((h + self.eps) / ah)
        return torch.stack([dx, dy, dw, dh], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes xyxy from ``deltas`` relative to ``anchors``; dw/dh clamped to ``self.clamp``."""
        acx, acy, aw, ah = self._cxcywh(anchors)
        dx, dy = deltas[..., 0], deltas[..., 1]
        dw = deltas[..., 2].clamp(max=self.clamp)
        dh = deltas[..., 3].clamp(max=self.clamp)
        cx, cy = dx * aw + acx, dy * ah + acy
        w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
