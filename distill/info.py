"""Parameter count and multiply-adds of a registered model, and where they are (breakdown)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from distill.models import build_model, model_description
from distill.models.options import pyramid_level


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


def _flops(fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """FLOPs of ``fn(*args)`` (``FlopCounterMode``: 2 per multiply-add) and its result."""
    with FlopCounterMode(display=False) as counter:
        result = fn(*args)
    return int(counter.get_total_flops()), result


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _head_level_params(head: nn.Module, level: int) -> int:
    """Parameters only level ``level`` of ``head`` uses: its light convs and its own norms."""
    own = 0
    light = getattr(head, "light", None)
    if light is not None and str(level) in light:
        own += _params(light[str(level)])
    for per_level in getattr(head, "bn_rep", []):  # EfficientDet: one norm per level and repeat
        own += _params(per_level[level])
    stems = getattr(head, "stems", None)  # ConvHead: a 1x1 stem per level
    if stems:
        own += _params(stems[level])
    return own


def _level_heads(model: nn.Module) -> dict[str, nn.Module]:
    """The heads measurable level by level (``run_tower`` + ``project``: the anchor families'
    class and box heads); none for a family whose head runs only as a whole."""
    heads = {key: getattr(model, key, None) for key in ("class_head", "box_head")}
    if all(hasattr(h, "run_tower") and hasattr(h, "project") for h in heads.values()):
        return heads
    return {}


def _level_row(heads: dict[str, nn.Module], level: int, stride: int, feat: torch.Tensor
               ) -> dict[str, Any]:
    """FLOPs of each head's tower and predictor on one level's map, and that level's params."""
    row: dict[str, Any] = {"level": f"P{pyramid_level(stride)}", "stride": stride,
                           "flops": 0, "params": 0}
    for key, head in heads.items():
        tower, hidden = _flops(head.run_tower, feat, level)
        predictor, _ = _flops(head.project, hidden)
        row[key] = {"tower_flops": tower, "predictor_flops": predictor}
        row["flops"] += tower + predictor
        row["params"] += _head_level_params(head, level)
    return row


def flops_breakdown(model: nn.Module, image_size: tuple[int, int]) -> dict[str, Any]:
    """FLOPs and parameters of a ``Detector`` per component and, for the heads, per level.

    The parts are measured one at a time (backbone, neck, then each head's tower and predictor
    on each level's map), so they add up to one whole forward pass; a head's parameters split
    into each level's own (light convs, per-level norms and stems) and those all levels share.
    A family whose head has no per-level tower gets the head measured whole (no level rows).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, *image_size, device=device)
            backbone_flops, feats = _flops(model.backbone, x)
            neck_flops, feats = _flops(model.neck, feats)
            heads = _level_heads(model)
            levels = [_level_row(heads, i, stride, feat) for i, (stride, feat)
                      in enumerate(zip(model.strides, feats, strict=True))] if heads else []
            head_flops = (sum(r["flops"] for r in levels) if heads else
                          _flops(model.forward_head, feats, frozenset())[0])
    finally:
        model.train(was_training)
    head_params = _params(model) - _params(model.backbone) - _params(model.neck)
    head = {"flops": head_flops, "params": head_params,
            "shared_params": head_params - sum(r["params"] for r in levels), "levels": levels}
    parts = {"backbone": {"flops": backbone_flops, "params": _params(model.backbone)},
             "neck": {"flops": neck_flops, "params": _params(model.neck)}, "head": head}
    return {"flops": sum(p["flops"] for p in parts.values()), "params": _params(model),
            "image_size": list(image_size), "components": parts}


def model_breakdown(
    name: str,
    num_classes: int = 90,
    image_size: int | None = None,
    device: str = "meta",
    **overrides: Any,
) -> dict[str, Any]:
    """``flops_breakdown`` of a registered model (built on ``device``, meta by default) at its
    image size; ``overrides`` go to the builder (e.g. ``light_levels=[3]``)."""
    with torch.device(device):
        model = build_model(name, num_classes=num_classes, image_size=image_size, **overrides)
    out = flops_breakdown(model, (model.image_size, model.image_size))
    return {"name": name, "num_classes": num_classes, "options": overrides, **out}


def _count(n: float) -> str:
    """``n`` with a K / M / G suffix."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


def format_breakdown(info: dict[str, Any]) -> str:
    """``model_breakdown``'s result as a text table: FLOPs and params with their shares of the
    whole model, and for each level its share of the head's FLOPs."""
    flops, params = info["flops"], info["params"]
    head = info["components"]["head"]
    lines = [f"{info['name']} ({info['num_classes']} classes, {info['image_size'][0]}x"
             f"{info['image_size'][1]}): {_count(flops)} FLOPs ({_count(flops / 2)} MACs), "
             f"{_count(params)} params",
             f"{'component':<22} {'FLOPs':>8} {'share':>6} {'params':>8} {'share':>6} "
             f"{'of head':>8}"]

    def row(label: str, f: int | None, p: int, of_head: str = "") -> None:
        fl = f"{_count(f):>8} {f / flops:>6.1%}" if f is not None else f"{'':>8} {'':>6}"
        lines.append(f"{label:<22} {fl} {_count(p):>8} {p / params:>6.1%} {of_head:>8}".rstrip())

    for key in ("backbone", "neck"):
        row(key, info["components"][key]["flops"], info["components"][key]["params"])
    row("head (class + box)", head["flops"], head["params"])
    for level in head["levels"]:
        row(f"  {level['level']} (stride {level['stride']})", level["flops"], level["params"],
            f"{level['flops'] / head['flops']:.1%}")
    row("  shared by the levels", None, head["shared_params"])
    return "\n".join(lines)
