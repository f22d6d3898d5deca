"""Latency table: interpolation, errors, save/load, and a tiny real profile."""

import json
import math
import random

import pytest
import torch

from distill.search.latency import (
    LatencyTable,
    profile_latency_table,
    required_keys,
    structure_latency_ms,
    table_key,
)
from distill.search.measure import conv_sizes
from distill.search.space import ConvSpec, SearchSpace

CHANNELS = [8, 32, 128]
GRID = [[1.0, 2.0, 4.0], [3.0, 5.0, 9.0], [6.0, 10.0, 20.0]]  # increasing both ways


def synthetic() -> LatencyTable:
    return LatencyTable("cpu", 160, list(CHANNELS), {"k3_s1_r40": [r[:] for r in GRID]})


def ms(table, cin, cout, kernel=3, stride=1, size=40):
    return table.conv_ms(ConvSpec(cin, cout, kernel, stride), size)


def test_grid_points_are_exact_and_between_is_monotone():
    table = synthetic()
    for i, cin in enumerate(CHANNELS):
        for j, cout in enumerate(CHANNELS):
            assert ms(table, cin, cout) == GRID[i][j]
    for cout in (8, 24, 48, 128):
        values = [ms(table, cin, cout) for cin in range(8, 129, 4)]
        assert all(a < b for a, b in zip(values, values[1:]))
    for cin in (8, 16, 100):
        values = [ms(table, cin, cout) for cout in range(8, 129, 4)]
        assert all(a < b for a, b in zip(values, values[1:]))
    # halfway in log2 between 8 and 32 is 16
    assert ms(table, 16, 8) == pytest.approx((1.0 + 3.0) / 2)


def test_beyond_the_grid():
    table = synthetic()
    assert ms(table, 3, 8) == GRID[0][0]  # below: clamped to the edge
    assert ms(table, 256, 128) == pytest.approx(2 * GRID[2][2])  # above: linear in MACs
    assert ms(table, 512, 256) == pytest.approx(8 * GRID[2][2])


def test_missing_key_says_what_and_how_to_fix():
    with pytest.raises(KeyError, match=r"k5_s2_r80.*kernel 5, stride 2, input 80x80.*"
                                       r"distill search RECIPE --profile"):
        ms(synthetic(), 8, 8, kernel=5, stride=2, size=80)


def test_save_load_round_trip(tmp_path):
    table = synthetic()
    path = tmp_path / "sub" / "latency.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    assert [p.name for p in path.parent.iterdir()] == ["latency.json"]  # no temp file left


@pytest.mark.parametrize("change, bad", [
    (lambda d: d["entries"].update({"conv3": d["entries"]["k3_s1_r40"]}), "conv3"),
    (lambda d: d["entries"]["k3_s1_r40"].pop(), "entries.k3_s1_r40"),
    (lambda d: d["entries"]["k3_s1_r40"][0].__setitem__(0, -1.0), "entries.k3_s1_r40"),
    (lambda d: d.update(channels=[32, 8, 128]), "channels"),
    (lambda d: d.update(image_size="big"), "image_size"),
    (lambda d: d.pop("device"), "device"),
    (lambda d: d.update(colour="red"), "colour"),
])
def test_load_names_the_file_and_the_bad_key(tmp_path, change, bad):
    data = synthetic().to_json()
    change(data)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=str(path)) as info:
        LatencyTable.load(path)
    assert bad in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: not valid JSON"):
        LatencyTable.load(path)


def test_required_keys_cover_every_conv_of_the_space():
    space = SearchSpace()
    keys = {table_key(*k) for k in required_keys(space, 320)}
    rng = random.Random(0)
    for kind in ("k1kx", "kxkx"):
        structure = space.initial(kind=kind)
        for _ in range(60):
            structure = space.mutate(structure, rng)
            for spec, size in conv_sizes(structure, 320):
                assert table_key(spec.kernel, spec.stride, size) in keys


def test_tiny_real_profile(one_thread):
    space = SearchSpace(kernels=[3])
    state = torch.get_rng_state()
    table = profile_latency_table(space, 32, channels=(8, 16), warmup=0, runs=1, progress=False)
    assert torch.equal(state, torch.get_rng_state())
    assert table.device == "cpu" and table.image_size == 32 and table.channels == [8, 16]
    assert set(table.entries) == {table_key(*k) for k in required_keys(space, 32)}
    assert "k3_s2_r32" in table.entries  # the stem
    values = [v for grid in table.entries.values() for row in grid for v in row]
    assert all(v > 0 and math.isfinite(v) for v in values)
    structure = space.initial(widths=(8, 16, 16, 16, 16))
    total = structure_latency_ms(structure, 32, table)
    assert total == pytest.approx(sum(table.conv_ms(s, r) for s, r in conv_sizes(structure, 32)))
    assert total > 0
