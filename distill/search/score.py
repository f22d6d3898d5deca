"""Zero-shot scores of a structure (MAE-NAS, REFERENCE section 3): no data, no training.

The entropy score runs Gaussian noise through the structure's blocks, without BatchNorm, with
every conv weight drawn from N(0, 1), and sums the weighted logs of the stages' output
variances (a proxy for the entropy of each feature map). The closed-form score approximates
the same quantity without a forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .blocks import build_blocks
from .space import Structure, unit_convs

DEFAULT_STAGE_WEIGHTS = (0.0, 0.0, 1.0, 1.0, 6.0)
KINDS = ("entropy", "closed_form")


def _check_weights(structure: Structure, stage_weights: Sequence[float]) -> list[float]:
    stages = len(structure) - 1
    if len(stage_weights) != stages:
        raise ValueError(f"stage_weights has {len(stage_weights)} values but the structure has "
                         f"{stages} stages (blocks after the stem); give one weight per stage")
    return [float(w) for w in stage_weights]


def _weighted(weights: list[float], values: list[float]) -> float:
    # a zero weight ignores its stage even when its value is -inf
    return math.fsum(w * v for w, v in zip(weights, values) if w != 0.0)


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def _stage_log_vars(blocks: nn.ModuleList, image_size: int, batch: int,
                    generator: torch.Generator) -> list[float]:
    """Re-draw every conv weight from N(0, 1), feed N(0, 1) noise, and return the log variance
    of each block's output. Activations are rescaled to unit std after every residual unit
    and the log of the removed scale is carried in float64: exact, since without bias or
    BatchNorm each unit is positively homogeneous (unit(a x) = a unit(x), a > 0)."""
    for module in blocks.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.normal_(generator=generator)
    x = torch.randn(batch, 3, image_size, image_size, generator=generator)
    log_scale = 0.0  # log of the std removed so far (python float: float64)
    values: list[float] = []
    for block in blocks:
        for unit in block:
            x = unit(x)
            std = float(x.std(correction=0))
            if not std > 0 or not math.isfinite(std):
                # every activation died (or blew up within one unit): no information
                return values + [-math.inf] * (len(blocks) - len(values))
            log_scale += math.log(std)
            x = x / std
        values.append(_log(float(x.var(correction=0))) + 2.0 * log_scale)
    return values


def entropy_score(
    structure: Structure,
    image_size: int = 160,
    batch: int = 2,
    stage_weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS,
    repeats: int = 2,
    seed: int = 0,
) -> float:
    """MAE-NAS entropy score: ``sum_i w_i log var(stage_i output)``, averaged over ``repeats``.

    The blocks are built without BatchNorm, every conv weight is drawn from N(0, 1) and the
    input is N(0, 1) noise of ``batch x 3 x image_size x image_size``; the stem's output is
    not a stage. Variances are population variances over the whole feature map (batch,
    channels, space). Random numbers come from a local ``torch.Generator`` seeded with
    ``seed`` (the global RNG is untouched): each repeat draws the conv weights in
    ``modules()`` order, then the noise. The same structure and seed give the same score.
    """
    weights = _check_weights(structure, stage_weights)
    if repeats < 1 or batch < 1 or image_size < 1:
        raise ValueError(f"need repeats, batch and image_size >= 1; got {repeats}, {batch}, "
                         f"{image_size}")
    # built on the meta device: no default init, so the global RNG is not used
    with torch.device("meta"):
        blocks = build_blocks(structure, norm=False)
    blocks = blocks.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    scores = []
    with torch.inference_mode():
        for _ in range(repeats):
            values = _stage_log_vars(blocks, image_size, batch, generator)[1:]
            scores.append(_weighted(weights, values))
    return math.fsum(scores) / repeats


def closed_form_score(
    structure: Structure, stage_weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS
) -> float:
    """Entropy score without a forward pass: ``sum_i w_i S_i`` with

        S_i = sum over the main-path convs c from the stem up to the end of stage i
              of log(sqrt(C_in(c) * k(c)^2)),

    i.e. the log of the std gain ``sqrt(fan_in)`` a N(0, 1) conv applies to its input,
    accumulated through the network as the variance would be (ReLU, residual additions and
    shortcuts are ignored). Wider and deeper stages raise it, like the entropy score.
    """
    weights = _check_weights(structure, stage_weights)
    total = 0.0
    values: list[float] = []
    for i, block in enumerate(structure):
        for index in range(block.depth):
            for spec in unit_convs(block, index):
                total += 0.5 * math.log(spec.in_ch * spec.kernel * spec.kernel)
        if i:
            values.append(total)
    return _weighted(weights, values)


def score(structure: Structure, kind: str = "entropy", **kwargs: object) -> float:
    """The zero-shot score ``kind`` ("entropy" or "closed_form") of ``structure``; ``kwargs``
    go to ``entropy_score`` or ``closed_form_score``."""
    if kind == "entropy":
        return entropy_score(structure, **kwargs)  # type: ignore[arg-type]
    if kind == "closed_form":
        return closed_form_score(structure, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown score kind {kind!r}; valid: {', '.join(KINDS)}")
