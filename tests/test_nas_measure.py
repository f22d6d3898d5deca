"""Closed-form params / multiply-adds / layers against the built modules, and the budget."""

import random
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.search.blocks import build_blocks
from distill.search.latency import LatencyTable
from distill.search.measure import (
    Budget,
    structure_layers,
    structure_macs,
    structure_params,
)
from distill.search.space import SearchSpace


def random_structures(count: int = 6, steps: int = 12):
    space = SearchSpace()
    out = []
    for seed in range(count):
        rng = random.Random(seed)
        structure = space.initial(kind=("k1kx", "kxkx")[seed % 2])
        for _ in range(steps):
            structure = space.mutate(structure, rng)
        out.append(structure)
    return out


@pytest.mark.parametrize("structure", random_structures())
def test_params_match_built_modules(structure):
    with torch.device("meta"):
        blocks = build_blocks(structure)
    assert structure_params(structure) == sum(p.numel() for p in blocks.parameters())


@pytest.mark.parametrize("image_size", [64, 77])  # 77: odd sides round up at every stride
@pytest.mark.parametrize("structure", random_structures(count=4))
def test_macs_match_flop_counter(structure, image_size):
    with torch.device("meta"):
        blocks = build_blocks(structure).eval()
        x = torch.empty(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        for block in blocks:
            x = block(x)
    assert counter.get_total_flops() % 2 == 0
    assert structure_macs(structure, image_size) == counter.get_total_flops() // 2


def test_layers_count_main_path_convs_only():
    space = SearchSpace()
    structure = space.initial()  # stem + 5 depth-1 stages of 2 convs, projection shortcuts
    assert structure_layers(structure) == 1 + 5 * 2
    deeper = tuple(replace(b, depth=3) if i == 2 else b for i, b in enumerate(structure))
    assert structure_layers(deeper) == 1 + 5 * 2 + 2 * 2
    with torch.device("meta"):
        blocks = build_blocks(deeper)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in blocks.modules())
    assert convs == structure_layers(deeper) + 5  # + one projection shortcut per stage


def test_budget_measure_and_violations():
    structure = SearchSpace().initial()
    found = Budget().measure(structure, 320)
    assert set(found) == {"params", "macs", "layers"}
    assert found["macs"] == structure_macs(structure, 320)
    assert Budget(params=found["params"], macs=found["macs"], layers=found["layers"]
                  ).violations(structure, 320) == []
    lines = Budget(macs=1000, layers=3, params=10**9).violations(structure, 320)
    assert lines == [f"macs {found['macs']:.2e} > budget 1.00e3".replace("e+0", "e"),
                     f"layers {found['layers']} > budget 3"]


def test_latency_budget_needs_a_table():
    structure = SearchSpace().initial()
    with pytest.raises(ValueError, match=r"latency table.*distill search RECIPE --profile"):
        Budget(latency_ms=5.0).violations(structure, 320)
    # a flat synthetic table: 0.5 ms per conv whatever its shape
    space = SearchSpace()
    from distill.search.latency import required_keys, table_key

    entries = {table_key(*key): [[0.5, 0.5], [0.5, 0.5]] for key in required_keys(space, 320)}
    table = LatencyTable("cpu", 320, [8, 512], entries)
    convs = 1 + 5 * 3  # stem, 2 main convs and a shortcut per stage
    assert Budget().measure(structure, 320, table)["latency_ms"] == pytest.approx(0.5 * convs)
    assert Budget(latency_ms=0.5 * convs).violations(structure, 320, table) == []
    assert Budget(latency_ms=1.0).violations(structure, 320, table) == [
        f"latency_ms {0.5 * convs:.3g} > budget 1"]
