"""Per-operator latency table measured on the target device, and a structure's latency from it.

The table holds, for every (kernel, stride, input side) a structure of the search space can
produce at one image size, the median milliseconds of Conv2d + BatchNorm + ReLU (batch 1,
eval mode, inference mode) on a grid of input x output channel counts. A structure's latency
is the sum over its convs (shortcuts included) of the interpolated table values: ops
outside convs (residual adds) and fusion effects are ignored, so use it to rank structures and
to enforce a budget; the report of `distill run` measures the chosen detector end to end.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.io import write_text_atomic

from .blocks import conv_layer
from .measure import conv_out_size, conv_sizes
from .space import ConvSpec, SearchSpace, Structure

KEY = re.compile(r"^k(\d+)_s(\d+)_r(\d+)$")
PROFILE_HINT = "re-run `distill search RECIPE --profile` to measure a table for this setup"


def table_key(kernel: int, stride: int, in_size: int) -> str:
    """The entry key of a conv: ``k{kernel}_s{stride}_r{in_size}``."""
    return f"k{kernel}_s{stride}_r{in_size}"


def _bracket(value: float, grid: list[float]) -> tuple[int, float]:
    """Index ``i`` and weight ``t`` in [0, 1] with ``value = grid[i] + t (grid[i+1] - grid[i])``
    (``value`` already clamped to the grid)."""
    if len(grid) == 1:
        return 0, 0.0
    i = min(max(0, sum(1 for g in grid if g <= value) - 1), len(grid) - 2)
    return i, (value - grid[i]) / (grid[i + 1] - grid[i])


@dataclass
class LatencyTable:
    """Median ms of Conv2d+BN+ReLU per ``table_key`` on a ``channels`` x ``channels`` grid
    (``entries[key][i][j]``: ``channels[i]`` inputs, ``channels[j]`` outputs)."""

    device: str
    image_size: int
    channels: list[int]
    entries: dict[str, list[list[float]]]
    threads: int | None = None  # torch CPU threads during the profile (None on CUDA)

    def conv_ms(self, spec: ConvSpec, in_size: int) -> float:
        """Milliseconds of ``spec`` on an ``in_size`` x ``in_size`` input.

        Bilinear interpolation over (log2 in_ch, log2 out_ch) on the grid. Beyond the grid the
        channel count is clamped to the nearest grid edge and then: below it the edge value is
        used as is (small convs are overhead-bound; this over- rather than under-estimates),
        above it the value is scaled by the ratio of channel counts, i.e. linearly in MACs.
        """
        key = table_key(spec.kernel, spec.stride, in_size)
        grid = self.entries.get(key)
        if grid is None:
            raise KeyError(f"latency table ({self.device}, image size {self.image_size}) has no "
                           f"entry {key!r}: kernel {spec.kernel}, stride {spec.stride}, input "
                           f"{in_size}x{in_size}; {PROFILE_HINT}")
        low, high = self.channels[0], self.channels[-1]
        cin, cout = min(max(spec.in_ch, low), high), min(max(spec.out_ch, low), high)
        logs = [math.log2(c) for c in self.channels]
        i, ti = _bracket(math.log2(cin), logs)
        j, tj = _bracket(math.log2(cout), logs)
        i1, j1 = min(i + 1, len(logs) - 1), min(j + 1, len(logs) - 1)
        value = ((1 - ti) * (1 - tj) * grid[i][j] + ti * (1 - tj) * grid[i1][j]
                 + (1 - ti) * tj * grid[i][j1] + ti * tj * grid[i1][j1])
        return value * max(1.0, spec.in_ch / cin) * max(1.0, spec.out_ch / cout)

    def structure_ms(self, structure: Structure, image_size: int) -> float:
        """Sum of ``conv_ms`` over every conv of ``structure`` (shortcuts included)."""
        return sum(self.conv_ms(spec, size) for spec, size in conv_sizes(structure, image_size))

    def to_json(self) -> dict[str, Any]:
        """The table as written to disk."""
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the table as JSON atomically (a temporary file renamed over ``path``)."""
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table written by ``save``; a malformed file raises ``ValueError`` naming the
        file and the bad key."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, data: Any, source: str = "latency table") -> LatencyTable:
        """Validate and build a table from its JSON form."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        fields = {"device", "image_size", "channels", "entries", "threads"}
        unknown = sorted(set(data) - fields)
        missing = sorted(fields - set(data) - {"threads"})
        if unknown or missing:
            raise ValueError(f"{source}: unknown keys {unknown}, missing keys {missing}")

        def positive_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value > 0

        if not isinstance(data["device"], str):
            raise ValueError(f"{source}: device: expected a string, got {data['device']!r}")
        if not positive_int(data["image_size"]):
            raise ValueError(f"{source}: image_size: expected a positive integer, "
                             f"got {data['image_size']!r}")
        threads = data.get("threads")
        if threads is not None and not positive_int(threads):
            raise ValueError(f"{source}: threads: expected a positive integer or null, "
                             f"got {threads!r}")
        channels = data["channels"]
        if (not isinstance(channels, list) or not channels
                or not all(positive_int(c) for c in channels)
                or any(a >= b for a, b in zip(channels, channels[1:]))):
            raise ValueError(f"{source}: channels: expected increasing positive integers, "
                             f"got {channels!r}")
        entries = data["entries"]
        if not isinstance(entries, dict):
            raise ValueError(f"{source}: entries: expected an object, got {entries!r}")
        n = len(channels)
        for key, grid in entries.items():
            if not KEY.match(key):
                raise ValueError(f"{source}: entries: bad key {key!r}, expected "
                                 "'k{kernel}_s{stride}_r{input size}'")
            if (not isinstance(grid, list) or len(grid) != n
                    or not all(isinstance(row, list) and len(row) == n for row in grid)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               and math.isfinite(v) and v >= 0 for row in grid for v in row)):
                raise ValueError(f"{source}: entries.{key}: expected a {n}x{n} grid of "
                                 "non-negative milliseconds")
        return cls(device=data["device"], image_size=data["image_size"], channels=channels,
                   entries={k: [[float(v) for v in row] for row in g] for k, g in entries.items()},
                   threads=threads)


def structure_latency_ms(structure: Structure, image_size: int, table: LatencyTable) -> float:
    """Sum of ``table.conv_ms`` over every conv of ``structure`` (shortcuts included)."""
    return table.structure_ms(structure, image_size)


def required_keys(space: SearchSpace, image_size: int) -> list[tuple[int, int, int]]:
    """(kernel, stride, input side) of every conv a structure of ``space`` can contain at
    ``image_size``: the stem, then per stage its strided convs and 1x1 shortcut at the stage's
    input side, the k1kx 1x1 there, and every kernel at stride 1 at the stage's output side."""
    stem = space.initial()[0]
    stem_spec = ConvSpec(3, stem.out_ch, stem.kernel, stem.stride)
    keys = {(stem.kernel, stem.stride, image_size)}
    size = conv_out_size(image_size, stem_spec)
    kernels = sorted(set(space.kernels) | {1})
    for stride in space.stage_strides:
        out = conv_out_size(size, ConvSpec(1, 1, 1, stride))
        keys.update((k, stride, size) for k in kernels)
        keys.add((1, 1, size))
        keys.update((k, 1, out) for k in kernels)
        size = out
    return sorted(keys, key=lambda key: (-key[2], key[0], key[1]))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def _time_ms(layer: nn.Module, x: torch.Tensor, device: torch.device, warmup: int, runs: int,
             max_cell_s: float) -> float:
    """Median ms of ``layer(x)``; warm-up and timed runs stop early once the cell has taken
    ``max_cell_s`` seconds (at least one timed run)."""
    cuda = device.type == "cuda"
    start = time.perf_counter()
    for _ in range(warmup):
        layer(x)
        if cuda:
            torch.cuda.synchronize(device)
        if time.perf_counter() - start > max_cell_s / 2:
            break
    times: list[float] = []
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        layer(x)
        if cuda:
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1000.0)
        if time.perf_counter() - start > max_cell_s:
            break
    return statistics.median(times)


def profile_latency_table(
    space: SearchSpace,
    image_size: int,
    device: str = "cpu",
    channels: tuple[int, ...] | list[int] = (8, 16, 32, 64, 128, 256, 512),
    warmup: int = 2,
    runs: int = 5,
    progress: bool = True,
    max_cell_s: float = 0.25,
) -> LatencyTable:
    """Measure a ``LatencyTable`` for ``space`` at ``image_size`` on ``device``.

    Every (kernel, stride, input side) of ``required_keys`` is timed on the channel grid:
    Conv2d + BatchNorm + ReLU in eval mode under ``torch.inference_mode``, batch 1, with the
    current torch thread count. Each cell gets ``warmup`` untimed and ``runs`` timed runs
    (median kept), both cut short once the cell has taken ``max_cell_s`` seconds, so a large
    conv costs about two runs: the default grid at 320 px takes about a minute on one CPU
    core (it grows with the square of the image size).
    """
    if image_size < 1 or warmup < 0 or runs < 1:
        raise ValueError(f"need image_size >= 1, warmup >= 0, runs >= 1; got {image_size}, "
                         f"{warmup}, {runs}")
    channels = sorted(set(int(c) for c in channels))
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    keys = required_keys(space, image_size)
    entries: dict[str, list[list[float]]] = {}
    started = time.perf_counter()
    # fork_rng: the layers' default init must not move the caller's global RNG
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        for n, (kernel, stride, size) in enumerate(keys):
            grid = []
            for cin in channels:
                x = torch.randn(1, cin, size, size, generator=generator).to(dev)
                row = []
                for cout in channels:
                    layer = conv_layer(ConvSpec(cin, cout, kernel, stride))
                    layer = layer.to(dev).eval()
                    row.append(round(_time_ms(layer, x, dev, warmup, runs, max_cell_s), 5))
                grid.append(row)
            entries[table_key(kernel, stride, size)] = grid
            if progress:
                print(f"latency table {n + 1}/{len(keys)}: {table_key(kernel, stride, size)} "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return LatencyTable(device=_device_name(dev), image_size=image_size, channels=channels,
                        entries=entries, threads=None if dev.type == "cuda" else
                        torch.get_num_threads())
