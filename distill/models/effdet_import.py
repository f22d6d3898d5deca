"""Import weights of the PyPI ``effdet`` package (EfficientDet) into this project's detectors.

Layout facts, checked against effdet 0.4.1 by ``tests/test_effdet_import.py``:

- Keys: effdet's ``backbone.*`` is our ``backbone.body.*`` (the same timm model); its
  ``fpn.resample.{3,4}`` (P6/P7) are our ``backbone.extra.{0,1}``; BiFPN input resamples are keyed
  by input offset in effdet and by input position here; head BatchNorms are ``bn_rep.<repeat>.
  <level>.bn.*`` in effdet (``bn_rep.<level>.<repeat>.*`` in its level-first layout).
- Box head: effdet predicts ``(ty, tx, th, tw)`` per anchor (its decoder unbinds in that order),
  we predict ``(dx, dy, dw, dh)``; the predict conv's output channels are permuted per anchor.
- Class head: anchor-major channels (``anchor * K + class``) in both; copied as is.
- Anchors: both go over levels, locations (row-major), then (octave outer, aspect inner); effdet
  stores them ``yxyx``, we ``xyxy``. Centres agree when the input side is a multiple of 128.
- BatchNorm eps 1e-3 in BiFPN and heads in both; the backbone's comes from timm (by name).
- effdet's native d0..d3 have no conv bias before BatchNorm (``redundant_bias=False``); our
  presets keep that bias, and it is filled with zeros, which changes nothing.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill.checkpoints import load_weights_file, write_detector_checkpoint

from .bifpn import bifpn_nodes
from .registry import build_model

EFFDET_VARIANTS: dict[str, str] = {
    **{f"tf_efficientdet_d{i}": f"tf_efficientdet_d{i}" for i in range(8)},
    **{f"efficientdet_d{i}": f"efficientdet_d{i}" for i in range(6)},
}
NUM_LEVELS = 5  # P3..P7 in every supported variant
NUM_ANCHORS = 9  # 3 scales x 3 aspect ratios in every supported variant
BACKBONE_LEVELS = 3  # P3..P5 come from the backbone, P6/P7 are made by ``fpn.resample``
BOX_ORDER = (1, 0, 3, 2)  # our (dx, dy, dw, dh) taken from effdet's (ty, tx, th, tw)
_WRAPPERS = ("module.", "model.")  # DataParallel / DDP and effdet's DetBench wrappers
_PARTS = ("fpn.", "class_net.", "box_net.")
_CHECKPOINT_ENTRIES = ("state_dict_ema", "state_dict", "model")
_CLASS_PREDICT = ("class_head.predict.conv_pw.weight", "class_head.predict.conv_pw.bias")
# our conv biases right before a BatchNorm: effdet has them only with ``redundant_bias``
_REDUNDANT_BIAS = re.compile(
    r"backbone\.extra\.\d+\.conv\.bias|neck\..*\.(conv_pw|resample\.\d+\.conv)\.bias"
    r"|(class|box)_head\.conv_rep\.\d+\.conv_pw\.bias"
)


# effdet's COCO models predict 90 class slots (slot = COCO category id - 1); the 80 categories
# COCO 2017 annotates, in id order, are the labels `data.format: coco` gives (ids sorted)
COCO80_CATEGORY_IDS: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)
COCO80_EFFDET_INDICES: tuple[int, ...] = tuple(i - 1 for i in COCO80_CATEGORY_IDS)


def effdet_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensors of an effdet file or state dict with wrapper prefixes stripped.

    Accepts a raw state dict or a training checkpoint with ``state_dict_ema`` (preferred: the
    released effdet weights are EMA weights), ``state_dict`` or ``model``; strips ``module.`` and
    ``model.`` (DetBench) prefixes, dropping keys outside the wrapped model (``anchors.boxes``).
    """
    if not isinstance(obj, dict):
        return {}
    for entry in _CHECKPOINT_ENTRIES:
        if isinstance(obj.get(entry), dict):
            obj = obj[entry]
            break
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    while not any(k.startswith(_PARTS) for k in state):
        prefix = next((p for p in _WRAPPERS if any(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def is_effdet_state_dict(state: Any) -> bool:
    """Whether ``state`` (a state dict or checkpoint) holds an effdet EfficientDet's weights."""
    keys = effdet_state_dict(state)
    return all(any(k.startswith(part) for k in keys) for part in _PARTS)


def model_name_for(variant: str) -> str:
    """Our registered model name for the effdet config ``variant``; clear error if unknown."""
    if variant not in EFFDET_VARIANTS:
        raise ValueError(
            f"unknown effdet variant {variant!r}; supported: {', '.join(EFFDET_VARIANTS)}"
        )
    return EFFDET_VARIANTS[variant]


def effdet_num_classes(state: dict[str, torch.Tensor], num_anchors: int = NUM_ANCHORS) -> int:
    """Number of classes of an (unwrapped) effdet state dict, from its class predict conv."""
    weight = state.get("class_net.predict.conv_pw.weight")
    if weight is None or weight.shape[0] % num_anchors:
        raise ValueError("effdet state dict without a usable 'class_net.predict.conv_pw.weight'")
    return weight.shape[0] // num_anchors


def _fusion_node(cell: str, node: str) -> str:
    return f"neck.cells.{cell}.nodes.{node}"


def _node_input(m: re.Match, nodes: list[tuple[int, list[int]]]) -> str | None:
    """Our key for an effdet BiFPN input resample, keyed there by input offset."""
    node, offset = int(m["node"]), int(m["offset"])
    if node >= len(nodes) or offset not in nodes[node][1]:
        return None
    position = nodes[node][1].index(offset)
    return f"{_fusion_node(m['cell'], m['node'])}.resample.{position}.{m['part']}.{m['name']}"


_NODE = r"fpn\.cell\.(?P<cell>\d+)\.fnode\.(?P<node>\d+)"
_HEAD = r"(?P<head>class|box)_net"
_RULES: list[tuple[re.Pattern, Callable[[re.Match, list], str | None]]] = [
    (re.compile(r"backbone\.(?P<rest>.+)"), lambda m, _: f"backbone.body.{m['rest']}"),
    (
        re.compile(r"fpn\.resample\.(?P<level>\d+)\.conv\.(?P<part>conv|bn)\.(?P<name>\w+)"),
        lambda m, _: f"backbone.extra.{int(m['level']) - BACKBONE_LEVELS}.{m['part']}.{m['name']}",
    ),
    (
        re.compile(_NODE + r"\.combine\.edge_weights"),
        lambda m, _: f"{_fusion_node(m['cell'], m['node'])}.fusion.weight",
    ),
    (
        re.compile(
            _NODE + r"\.combine\.resample\.(?P<offset>\d+)\.conv\.(?P<part>conv|bn)\.(?P<name>\w+)"
        ),
        _node_input,
    ),
    (
        re.compile(_NODE + r"\.after_combine\.conv\.(?P<part>conv_dw|conv_pw|bn)\.(?P<name>\w+)"),
        lambda m, _: f"{_fusion_node(m['cell'], m['node'])}.conv.{m['part']}.{m['name']}",
    ),
    (
        re.compile(_HEAD + r"\.(?P<mod>conv_rep\.\d+|predict)\.(?P<part>conv_(dw|pw))\.(?P<n>\w+)"),
        lambda m, _: f"{m['head']}_head.{m['mod']}.{m['part']}.{m['n']}",
    ),
    (  # repeat-first layout (effdet's default): bn_rep.<repeat>.<level>.bn.*
        re.compile(_HEAD + r"\.bn_rep\.(?P<rep>\d+)\.(?P<level>\d+)\.bn\.(?P<name>\w+)"),
        lambda m, _: f"{m['head']}_head.bn_rep.{m['rep']}.{m['level']}.{m['name']}",
    ),
    (  # level-first layout (head_bn_level_first / toggled): bn_rep.<level>.<repeat>.*
        re.compile(_HEAD + r"\.bn_rep\.(?P<level>\d+)\.(?P<rep>\d+)\.(?P<name>\w+)"),
        lambda m, _: f"{m['head']}_head.bn_rep.{m['rep']}.{m['level']}.{m['name']}",
    ),
]


def our_key(key: str, nodes: list[tuple[int, list[int]]] | None = None) -> str | None:
    """Our state-dict key for the effdet key ``key`` (``None`` when it has no counterpart)."""
    nodes = nodes if nodes is not None else bifpn_nodes(NUM_LEVELS)
    for pattern, target in _RULES:
        match = pattern.fullmatch(key)
        if match:
            return target(match, nodes)
    return None


def box_channel_order(channels: int) -> torch.Tensor:
    """Indices into effdet's box predict channels giving ours: (ty, tx, th, tw) -> (dx, dy, ...)."""
    anchors = torch.arange(channels // 4).unsqueeze(1) * 4
    return (anchors + torch.tensor(BOX_ORDER)).reshape(-1)


def _select_classes(value: torch.Tensor, indices: list[int], available: int) -> torch.Tensor:
    """Keep effdet class channels ``indices`` (in that order) of every anchor."""
    bad = [i for i in indices if not 0 <= i < available]
    if bad:
        raise ValueError(f"class indices {bad} out of range: the effdet model has {available}")
    per_anchor = value.reshape(-1, available, *value.shape[1:])
    return per_anchor[:, list(indices)].reshape(-1, *value.shape[1:])


def _map_tensors(
    state: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    variant: str,
    name: str,
    class_indices: list[int] | None,
    reinit_classes: bool,
) -> dict[str, torch.Tensor]:
    """Every effdet tensor under our key, laid out as ours; errors name variant, key and shapes."""
    nodes = bifpn_nodes(NUM_LEVELS)
    file_classes = effdet_num_classes(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ours = our_key(key, nodes)
        if ours is None or ours not in target:
            where = "no counterpart" if ours is None else f"maps to {ours!r}, which it lacks"
            raise ValueError(f"effdet {variant}: key {key!r} has {where} in our {name}")
        if ours in _CLASS_PREDICT:
            if reinit_classes:
                continue
            if class_indices is not None:
                value = _select_classes(value, class_indices, file_classes)
        if key.startswith("box_net.predict.conv_pw."):
            if value.shape[0] % 4:
                raise ValueError(f"effdet {variant}: {key!r} has {value.shape[0]} outputs, not 4k")
            value = value[box_channel_order(value.shape[0])]
        if tuple(value.shape) != tuple(target[ours].shape):
            raise ValueError(
                f"effdet {variant}: tensor {key!r} has shape {tuple(value.shape)}, but our "
                f"{name} needs {tuple(target[ours].shape)} for {ours!r}"
            )
        out[ours] = value
    return out


def convert_effdet_state_dict(
    state: dict,
    variant: str,
    num_classes: int | None = None,
    class_indices: list[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Convert an effdet ``variant`` state dict (or checkpoint) to our ``Detector`` keys.

    ``num_classes`` defaults to the file's. ``class_indices`` keeps those effdet class channels
    in that order (e.g. COCO category id - 1 for effdet's 90-class COCO models); otherwise a
    ``num_classes`` other than the file's re-initialises the class predict conv (with a
    warning). Keys follow ``build_model(EFFDET_VARIANTS[variant], num_classes).state_dict()``.
    """
    name = model_name_for(variant)
    state = effdet_state_dict(state)
    if not is_effdet_state_dict(state):
        raise ValueError(
            f"effdet {variant}: not an effdet state dict (no {'/'.join(_PARTS)} keys found)"
        )
    file_classes = effdet_num_classes(state)
    if class_indices is not None:
        class_indices = [int(i) for i in class_indices]
        if num_classes is not None and num_classes != len(class_indices):
            raise ValueError(f"num_classes {num_classes} != {len(class_indices)} class indices")
        num_classes = len(class_indices)
    num_classes = file_classes if num_classes is None else int(num_classes)
    reinit = class_indices is None and num_classes != file_classes
    with torch.device("meta"):  # shapes only: nothing is computed or allocated
        target = build_model(name, num_classes=num_classes).state_dict()
    out = _map_tensors(state, target, variant, name, class_indices, reinit)
    missing = [k for k in target if k not in out]
    if not any(_REDUNDANT_BIAS.fullmatch(k) for k in out):  # effdet redundant_bias=False
        for key in [k for k in missing if _REDUNDANT_BIAS.fullmatch(k)]:
            out[key] = torch.zeros(target[key].shape, dtype=target[key].dtype)
    if reinit:
        warnings.warn(
            f"effdet {variant}: {file_classes} classes in the file, {num_classes} asked for: "
            "the class predict conv is re-initialised",
            stacklevel=2,
        )
        fresh = build_model(name, num_classes=num_classes).class_head.predict.conv_pw
        out.update(zip(_CLASS_PREDICT, (fresh.weight.detach(), fresh.bias.detach())))
    missing = [k for k in target if k not in out]
    if missing:
        more = f", ... ({len(missing)} in all)" if len(missing) > 8 else ""
        shown = ", ".join(missing[:8]) + more
        raise ValueError(f"effdet {variant}: our {name} needs tensors the file lacks: {shown}")
    return {k: out[k] for k in target}


def read_effdet_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an effdet weights file (``weights_only=True``) and unwrap its state dict."""
    path = Path(path)
    state = effdet_state_dict(load_weights_file(path))
    if not is_effdet_state_dict(state):
        raise ValueError(f"{path}: not an effdet EfficientDet state dict")
    return state


def load_effdet_checkpoint(
    path: str | Path,
    variant: str,
    num_classes: int | None = None,
    class_indices: list[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Read the effdet file ``path`` and convert it for our model of ``variant``."""
    model_name_for(variant)  # fail on the variant before reading a large file
    return convert_effdet_state_dict(read_effdet_file(path), variant, num_classes, class_indices)


def import_effdet(
    weights: str | Path,
    variant: str,
    out: str | Path,
    num_classes: int | None = None,
    class_indices: list[int] | None = None,
) -> dict[str, Any]:
    """Convert the effdet file ``weights`` and save a teacher checkpoint at ``out``.

    The checkpoint is ``{"state_dict": {"model." + key: tensor}, "hyper_parameters": {...}}``,
    which ``distill eval`` and ``teacher.checkpoint`` read like a ``distill train`` checkpoint.
    Returns its ``hyper_parameters``.
    """
    state = load_effdet_checkpoint(weights, variant, num_classes, class_indices)
    classes = int(state["class_head.predict.conv_pw.bias"].shape[0]) // NUM_ANCHORS
    hparams = {
        "model": {"name": model_name_for(variant)},
        "num_classes": classes,
        "source": {
            "format": "effdet",
            "variant": variant,
            "weights": str(weights),
            "class_indices": class_indices,
        },
    }
    write_detector_checkpoint(out, state, hparams)
    return hparams
