"""Parameter count and multiply-adds of a registered model."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.models import build_model, model_description


def count_macs(model: torch.nn.Module, image_size: tuple[int, int], device: str = "meta") -> int:
    """Multiply-adds of one forward pass on a single ``image_size`` (h, w) image.

    ``FlopCounterMode`` counts 2 FLOPs per multiply-add, so MACs = FLOPs / 2.
    """
    x = torch.zeros(1, 3, *image_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def model_info(
    name: str,
    num_classes: int = 90,
    image_size: int | None = None,
    device: str = "meta",
    **overrides: Any,
) -> dict[str, Any]:
    """Params and MACs (one image at the model's resolution) with the model's neck layout.

    The model is built on the ``meta`` device by default, so even large models cost no memory;
    ``overrides`` go to the builder (a recipe's ``model.options``, ``fusion``, ...).
    """
    with torch.device(device):
        model = build_model(name, num_classes=num_classes, image_size=image_size, **overrides)
    size = (model.image_size, model.image_size)
    return {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, size, device),
        "image_size": list(size),
        "strides": list(model.strides),
        "neck_channels": list(model.neck_channels),
        "description": model_description(name),
    }
