"""Closed-form costs of a structure (params, multiply-adds, layers) and the search budget.

Everything here reads ``block_convs`` / ``unit_convs`` / ``shortcut_conv``: no module is built,
so a call costs microseconds and a search can make thousands of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .space import ConvSpec, Structure, block_convs, shortcut_conv, unit_convs


class LatencyLookup(Protocol):
    """What a budget needs of a latency table (``distill.search.latency.LatencyTable``, which
    builds on this module's ``conv_sizes``: this module does not import it)."""

    def structure_ms(self, structure: Structure, image_size: int) -> float:
        """Estimated milliseconds of ``structure`` at ``image_size``."""
        ...


def conv_out_size(size: int, spec: ConvSpec) -> int:
    """Output side of ``spec`` on a ``size`` x ``size`` input (padding ``kernel // 2``).

    ``ceil(size / stride)`` for the odd kernels of the search space.
    """
    return (size + 2 * (spec.kernel // 2) - spec.kernel) // spec.stride + 1


def conv_sizes(structure: Structure, image_size: int) -> Iterator[tuple[ConvSpec, int]]:
    """Every convolution of ``structure`` (main paths and shortcuts) with its input side."""
    size = image_size
    for block in structure:
        for index in range(block.depth):
            unit_in = size
            for spec in unit_convs(block, index):
                yield spec, size
                size = conv_out_size(size, spec)
            shortcut = shortcut_conv(block, index)
            if shortcut is not None:
                yield shortcut, unit_in


def conv_params(spec: ConvSpec) -> int:
    """Weights of one conv (no bias) plus its BatchNorm's weight and bias."""
    return spec.in_ch * spec.out_ch * spec.kernel * spec.kernel + 2 * spec.out_ch


def conv_macs(spec: ConvSpec, in_size: int) -> int:
    """Multiply-adds of one conv on an ``in_size`` x ``in_size`` input (one image)."""
    out = conv_out_size(in_size, spec)
    return out * out * spec.out_ch * spec.in_ch * spec.kernel * spec.kernel


def structure_params(structure: Structure) -> int:
    """Parameters of ``build_blocks(structure)``: convs (incl. shortcuts) and BatchNorms."""
    return sum(conv_params(spec) for block in structure for spec in block_convs(block))


def structure_macs(structure: Structure, image_size: int) -> int:
    """Multiply-adds of all convs (incl. shortcuts) for one ``image_size`` x ``image_size``
    image; BatchNorm, ReLU and the residual additions are not counted."""
    return sum(conv_macs(spec, size) for spec, size in conv_sizes(structure, image_size))


def structure_layers(structure: Structure) -> int:
    """Number of convs on the main paths (the stem included, shortcuts excluded)."""
    return sum(len(unit_convs(block, index)) for block in structure
               for index in range(block.depth))


def _scientific(value: float) -> str:
    return f"{value:.2e}".replace("e+0", "e").replace("e+", "e")


@dataclass
class Budget:
    """Upper bounds a searched structure must meet; ``None`` means no bound."""

    params: int | None = None
    macs: int | None = None
    layers: int | None = None
    latency_ms: float | None = None

    def measure(self, structure: Structure, image_size: int,
                latency_table: LatencyLookup | None = None) -> dict[str, Any]:
        """``params``, ``macs`` and ``layers`` of ``structure``; ``latency_ms`` too when a
        latency table is given."""
        found: dict[str, Any] = {
            "params": structure_params(structure),
            "macs": structure_macs(structure, image_size),
            "layers": structure_layers(structure),
        }
        if latency_table is not None:
            found["latency_ms"] = latency_table.structure_ms(structure, image_size)
        return found

    def violations(self, structure: Structure, image_size: int,
                   latency_table: LatencyLookup | None = None) -> list[str]:
        """One line per exceeded bound, e.g. ``"macs 1.23e9 > budget 1.00e9"`` (empty when
        ``structure`` is within budget). Only the bounded quantities are computed."""
        if self.latency_ms is not None and latency_table is None:
            raise ValueError("a latency budget needs a latency table measured on the target "
                             "device; make one with `distill search RECIPE --profile`")
        found: list[str] = []
        if self.params is not None:
            value = structure_params(structure)
            if value > self.params:
                found.append(f"params {_scientific(value)} > budget {_scientific(self.params)}")
        if self.macs is not None:
            value = structure_macs(structure, image_size)
            if value > self.macs:
                found.append(f"macs {_scientific(value)} > budget {_scientific(self.macs)}")
        if self.layers is not None:
            value = structure_layers(structure)
            if value > self.layers:
                found.append(f"layers {value} > budget {self.layers}")
        if self.latency_ms is not None:
            assert latency_table is not None
            ms = latency_table.structure_ms(structure, image_size)
            if ms > self.latency_ms:
                found.append(f"latency_ms {ms:.3g} > budget {self.latency_ms:.3g}")
        return found
