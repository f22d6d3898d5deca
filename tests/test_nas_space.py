"""The search space: mutations keep every rule, and a block type is one entry of BLOCK_TYPES."""

from __future__ import annotations

import random

import pytest
import torch

from distill.search import space as space_module
from distill.search.blocks import build_blocks
from distill.search.measure import structure_layers, structure_params
from distill.search.score import closed_form_score, entropy_score
from distill.search.space import Block, ConvSpec, SearchSpace, output_strides
from students.nas.backbone import NasBackbone


def walk(space: SearchSpace, steps: int, seed: int = 0):
    rng = random.Random(seed)
    structure = space.initial()
    for _ in range(steps):
        structure = space.mutate(structure, rng)
        yield structure


def test_mutations_keep_every_constraint_and_change_one_thing():
    space = SearchSpace(max_depth=6, kernels=[3, 5, 7])
    previous = space.initial()
    for structure in walk(space, 1500):
        assert space.problems(structure) == []
        assert structure != previous
        changed = [i for i, (a, b) in enumerate(zip(previous, structure)) if a != b]
        # one block changes; a width change also rewires the next block's input
        assert len(changed) in (1, 2)
        if len(changed) == 2:
            first, second = changed
            assert second == first + 1 and structure[second].in_ch == structure[first].out_ch
        for block in structure[1:]:
            assert block.out_ch % 8 == 0 and 1 <= block.depth <= 6
            assert block.out_ch / 10 <= block.bottleneck <= block.out_ch
            assert block.kernel in (3, 5, 7) and block.kind in ("k1kx", "kxkx")
        assert output_strides(structure) == [2, 4, 8, 16, 16, 32]
        previous = structure


def test_problems_name_the_broken_rule():
    space = SearchSpace()
    good = space.initial()
    assert space.problems(good) == []
    wide = list(good)
    wide[2] = Block("k1kx", good[1].out_ch, 36, 2, 3, 1, 16)
    found = space.problems(tuple(wide))
    assert any("blocks[2].out: 36 is not a multiple of 8" in p for p in found)
    assert any("blocks[3].in" in p for p in found)
    deep = list(good)
    deep[4] = Block("kxkx", good[3].out_ch, good[4].out_ch, 1, 9, 99, 8)
    found = space.problems(tuple(deep))
    assert any("kernel: 9" in p for p in found) and any("depth: 99" in p for p in found)


def _k1kxk1(in_ch: int, out_ch: int, btn: int, kernel: int, stride: int) -> list[ConvSpec]:
    """ResNet bottleneck: 1x1 down, k x k (strided), 1x1 up."""
    return [ConvSpec(in_ch, btn, 1), ConvSpec(btn, btn, kernel, stride),
            ConvSpec(btn, out_ch, 1, act=False)]


def test_a_new_block_type_is_one_entry(monkeypatch):
    """Registering a unit's convolutions is enough: mutation, building, counting and scoring
    all follow."""
    monkeypatch.setitem(space_module.BLOCK_TYPES, "k1kxk1", _k1kxk1)
    space = SearchSpace(block_kinds=["k1kxk1"], mutations=["width", "bottleneck", "depth"])
    structures = [space.initial(), *walk(space, 30)]
    assert all(b.kind == "k1kxk1" for s in structures for b in s[1:])
    for s in structures[::10]:
        blocks = build_blocks(s)
        assert structure_params(s) == sum(p.numel() for p in blocks.parameters())
        assert structure_layers(s) == 1 + 3 * sum(b.depth for b in s[1:])
        feats = NasBackbone(s, num_extra=0).eval()(torch.randn(1, 3, 64, 64))
        assert [f.shape[-1] for f in feats] == [8, 4, 2]
        assert torch.isfinite(torch.tensor(entropy_score(s, image_size=32, repeats=1)))
        assert closed_form_score(s) > 0


def test_mutation_with_nothing_to_change_fails_clearly():
    # one kernel, one block class, and a stem whose width cannot move: nothing can change
    space = SearchSpace(kernels=[3], block_kinds=["k1kx"], mutations=["kernel", "class"],
                        min_width=16, max_stem_width=16)
    with pytest.raises(RuntimeError, match="no valid mutation"):
        space.mutate(space.initial(), random.Random(0))
