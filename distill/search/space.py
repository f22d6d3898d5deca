"""MAE-NAS search space: a structure is a stem plus stages of residual blocks, kept as data.

``BLOCK_TYPES`` says what each block class is made of: the convolutions of one residual unit.
Building (``distill.search.blocks``), counting (params, multiply-adds, layers), the latency lookup
and the closed-form score all read that description, so a new block type is one entry there.

A block ``{class, in, out, stride, kernel, depth, bottleneck}`` is ``depth`` residual units; the
first goes ``in -> out`` with ``stride`` (and a 1x1 projection shortcut when the shape changes),
the others ``out -> out`` with an identity shortcut.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from distill.search_config import SearchSpaceConfig


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of a unit: BatchNorm always follows; ``act`` says whether ReLU does."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int = 1
    act: bool = True


@dataclass(frozen=True)
class Block:
    """``depth`` residual units of class ``kind`` (the stem: ``kind="conv"``, one conv)."""

    kind: str
    in_ch: int
    out_ch: int
    stride: int
    kernel: int
    depth: int = 1
    bottleneck: int = 0

    def to_json(self) -> dict[str, Any]:
        """The block as written in ``structure.json``."""
        return {"class": self.kind, "in": self.in_ch, "out": self.out_ch, "stride": self.stride,
                "kernel": self.kernel, "depth": self.depth, "bottleneck": self.bottleneck}


Structure = tuple[Block, ...]
JSON_KEYS = {"class": "kind", "in": "in_ch", "out": "out_ch", "stride": "stride",
             "kernel": "kernel", "depth": "depth", "bottleneck": "bottleneck"}


def _k1kx(in_ch: int, out_ch: int, btn: int, kernel: int, stride: int) -> list[ConvSpec]:
    """Bottleneck unit: 1x1 to the bottleneck width, then k x k (strided) to the output."""
    return [ConvSpec(in_ch, btn, 1), ConvSpec(btn, out_ch, kernel, stride, act=False)]


def _kxkx(in_ch: int, out_ch: int, btn: int, kernel: int, stride: int) -> list[ConvSpec]:
    """Basic unit: k x k (strided) to the bottleneck width, then k x k to the output."""
    return [ConvSpec(in_ch, btn, kernel, stride), ConvSpec(btn, out_ch, kernel, act=False)]


# block class -> the convolutions of one residual unit (in, out, bottleneck, kernel, stride)
BLOCK_TYPES: dict[str, Callable[[int, int, int, int, int], list[ConvSpec]]] = {
    "k1kx": _k1kx,
    "kxkx": _kxkx,
}
STEM = "conv"


def unit_convs(block: Block, index: int) -> list[ConvSpec]:
    """The main-path convolutions of unit ``index`` (0 is the strided, ``in -> out`` one)."""
    if block.kind == STEM:
        return [ConvSpec(block.in_ch, block.out_ch, block.kernel, block.stride)]
    in_ch, stride = (block.in_ch, block.stride) if index == 0 else (block.out_ch, 1)
    return BLOCK_TYPES[block.kind](in_ch, block.out_ch, block.bottleneck, block.kernel, stride)


def shortcut_conv(block: Block, index: int) -> ConvSpec | None:
    """The 1x1 projection shortcut of unit ``index``; None for an identity shortcut."""
    if block.kind == STEM or index > 0:
        return None
    if block.in_ch == block.out_ch and block.stride == 1:
        return None
    return ConvSpec(block.in_ch, block.out_ch, 1, block.stride, act=False)


def block_convs(block: Block) -> list[ConvSpec]:
    """Every convolution of ``block`` (main paths and shortcuts), in order."""
    convs: list[ConvSpec] = []
    for index in range(block.depth):
        convs += unit_convs(block, index)
        shortcut = shortcut_conv(block, index)
        if shortcut is not None:
            convs.append(shortcut)
    return convs


def output_strides(structure: Structure) -> list[int]:
    """The stride (input size / feature size) after each block."""
    strides, total = [], 1
    for block in structure:
        total *= block.stride
        strides.append(total)
    return strides


def _multiple(value: float, multiple: int) -> int:
    return int(round(value / multiple)) * multiple


# what a mutation may change (``search.space.mutations``)
MUTATIONS: tuple[str, ...] = ("width", "bottleneck", "depth", "kernel", "class")


@dataclass
class SearchSpace(SearchSpaceConfig):
    """What a structure may look like and how a mutation changes it (REFERENCE section 3): the
    recipe's ``search.space`` (``SearchSpaceConfig``: the fields and defaults) with its rules."""

    @classmethod
    def from_config(cls, cfg: Any) -> SearchSpace:
        """The space of a recipe's ``search.space`` section (missing keys: defaults)."""
        values = {}
        for f in fields(cls):
            if hasattr(cfg, f.name):
                value = getattr(cfg, f.name)
                values[f.name] = list(value) if isinstance(value, (list, tuple)) else value
        return cls(**values)

    def bottleneck_range(self, out_ch: int) -> tuple[int, int]:
        """Smallest and largest bottleneck width allowed for a block with ``out_ch`` outputs."""
        step = self.channel_multiple
        low = math.ceil(out_ch * self.min_bottleneck_ratio / step) * step
        return max(low, self.min_width), out_ch

    def problems(self, structure: Structure) -> list[str]:
        """Every way ``structure`` breaks this space's rules (empty when it is valid)."""
        found: list[str] = []
        if len(structure) != len(self.stage_strides) + 1:
            return [f"expected a stem and {len(self.stage_strides)} stages, "
                    f"got {len(structure)} blocks"]
        if structure[0].kind != STEM or structure[0].in_ch != 3:
            found.append(f"blocks[0]: expected the stem (class {STEM!r}, in 3)")
        for i, block in enumerate(structure):
            where = f"blocks[{i}]"
            if i and block.kind not in self.block_kinds:
                found.append(f"{where}.class: {block.kind!r} not in {self.block_kinds}")
            if i and block.in_ch != structure[i - 1].out_ch:
                found.append(f"{where}.in: {block.in_ch} != blocks[{i - 1}].out "
                             f"{structure[i - 1].out_ch}")
            if i and block.stride != self.stage_strides[i - 1]:
                found.append(f"{where}.stride: {block.stride}, the space says "
                             f"{self.stage_strides[i - 1]}")
            if block.out_ch % self.channel_multiple or not (
                self.min_width <= block.out_ch <= self.max_width
            ):
                found.append(f"{where}.out: {block.out_ch} is not a multiple of "
                             f"{self.channel_multiple} in [{self.min_width}, {self.max_width}]")
            if i == 0:
                if block.out_ch > self.max_stem_width:
                    found.append(f"{where}.out: the stem is wider than {self.max_stem_width}")
                continue
            if block.kernel not in self.kernels:
                found.append(f"{where}.kernel: {block.kernel} not in {self.kernels}")
            if not 1 <= block.depth <= self.max_depth:
                found.append(f"{where}.depth: {block.depth} not in [1, {self.max_depth}]")
            low, high = self.bottleneck_range(block.out_ch)
            if not low <= block.bottleneck <= high or block.bottleneck % self.channel_multiple:
                found.append(f"{where}.bottleneck: {block.bottleneck} not a multiple of "
                             f"{self.channel_multiple} in [{low}, {high}]")
        return found

    def initial(self, stem: int = 16, widths: tuple[int, ...] = (24, 40, 64, 96, 160),
                kind: str | None = None, kernel: int = 3) -> Structure:
        """A small depth-1 structure to start a search from (bottleneck = out / 2; block
        class: ``kind``, default the space's first)."""
        kind = kind or self.block_kinds[0]
        blocks = [Block(STEM, 3, stem, 2, 3)]
        for width, stride in zip(widths, self.stage_strides):
            low, high = self.bottleneck_range(width)
            btn = min(high, max(low, _multiple(width / 2, self.channel_multiple)))
            blocks.append(Block(kind, blocks[-1].out_ch, width, stride, kernel, 1, btn))
        return tuple(blocks)

    def _width(self, value: float, stem: bool = False) -> int:
        value = _multiple(value, self.channel_multiple)
        return min(self.max_stem_width if stem else self.max_width, max(self.min_width, value))

    def _mutate_once(self, structure: Structure, rng: random.Random) -> Structure:
        blocks = list(structure)
        i = rng.randrange(len(blocks))
        block = blocks[i]
        kind = "width" if i == 0 else rng.choice(self.mutations)
        if kind == "width":
            out_ch = self._width(block.out_ch * rng.choice(self.width_scales), stem=i == 0)
            block = replace(block, out_ch=out_ch)
            if i:
                low, high = self.bottleneck_range(out_ch)
                block = replace(block, bottleneck=min(high, max(low, block.bottleneck)))
            if i + 1 < len(blocks):
                blocks[i + 1] = replace(blocks[i + 1], in_ch=out_ch)
        elif kind == "bottleneck":
            low, high = self.bottleneck_range(block.out_ch)
            btn = _multiple(block.bottleneck * rng.choice(self.width_scales),
                            self.channel_multiple)
            block = replace(block, bottleneck=min(high, max(low, btn)))
        elif kind == "depth":
            depth = block.depth + rng.choice(self.depth_steps)
            block = replace(block, depth=min(self.max_depth, max(1, depth)))
        elif kind == "kernel":
            block = replace(block, kernel=rng.choice(self.kernels))
        elif kind == "class":
            block = replace(block, kind=rng.choice(self.block_kinds))
        else:
            raise ValueError(f"unknown mutation {kind!r}; valid: {', '.join(MUTATIONS)}")
        blocks[i] = block
        return tuple(blocks)

    def mutate(self, structure: Structure, rng: random.Random, tries: int = 100) -> Structure:
        """A copy of ``structure`` with one random change that keeps it valid and differs."""
        for _ in range(tries):
            child = self._mutate_once(structure, rng)
            if child != structure and not self.problems(child):
                return child
        raise RuntimeError(f"no valid mutation found in {tries} tries; check the search space")


def structure_to_json(structure: Structure) -> list[dict[str, Any]]:
    """The ``blocks`` list of ``structure.json``."""
    return [block.to_json() for block in structure]


def structure_from_json(blocks: Any, source: str = "structure") -> Structure:
    """Blocks read from JSON; a missing, unknown or non-integer key raises ``ValueError``."""
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(f"{source}: expected a non-empty list of blocks, got {blocks!r}")
    parsed = []
    for i, item in enumerate(blocks):
        where = f"{source}: blocks[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object, got {item!r}")
        unknown = sorted(set(item) - set(JSON_KEYS))
        missing = sorted(set(JSON_KEYS) - set(item) - {"depth", "bottleneck"})
        if unknown or missing:
            raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}; "
                             f"expected {sorted(JSON_KEYS)}")
        kind = item["class"]
        if kind != STEM and kind not in BLOCK_TYPES:
            raise ValueError(f"{where}.class: unknown block class {kind!r}; valid: "
                             f"{[STEM, *BLOCK_TYPES]}")
        values = {}
        for key, name in JSON_KEYS.items():
            if key == "class" or key not in item:
                continue
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}.{key}: expected a non-negative integer, got {value!r}")
            values[name] = value
        block = Block(kind=kind, **values)
        if block.kind != STEM and (block.bottleneck < 1 or block.depth < 1):
            raise ValueError(f"{where}: a {kind} block needs depth >= 1 and bottleneck >= 1")
        if i and block.in_ch != parsed[-1].out_ch:
            raise ValueError(f"{where}.in: {block.in_ch} does not match blocks[{i - 1}].out "
                             f"{parsed[-1].out_ch}")
        parsed.append(block)
    if parsed[0].in_ch != 3:
        raise ValueError(f"{source}: blocks[0].in must be 3 (RGB), got {parsed[0].in_ch}")
    return tuple(parsed)


def space_to_json(space: SearchSpace) -> dict[str, Any]:
    """The search space's settings, stored with a structure."""
    return asdict(space)


def load_structure(path: str | Path) -> Structure:
    """Read ``structure.json`` (``{"blocks": [...], ...}`` or a bare list of blocks)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    blocks = data.get("blocks") if isinstance(data, dict) else data
    return structure_from_json(blocks, source=str(path))
