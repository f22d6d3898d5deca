"""Zero-shot scores: determinism, exactness of the rescaled forward, ranking, dispatch."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from distill.search.blocks import build_blocks
from distill.search.score import closed_form_score, entropy_score, score
from distill.search.space import SearchSpace

SPACE = SearchSpace()


def structure(widths=(16, 24, 32, 48, 64), depth=1, kind="k1kx"):
    blocks = SPACE.initial(stem=8, widths=widths, kind=kind)
    return tuple(replace(b, depth=depth) if i else b for i, b in enumerate(blocks))


def naive_score(struct, image_size, batch, weights, repeats, seed, dtype):
    """The textbook computation: same random draws, no rescaling, plain variances."""
    blocks = build_blocks(struct, norm=False).eval().to(dtype)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for _ in range(repeats):
            for m in blocks.modules():
                if isinstance(m, nn.Conv2d):
                    w = torch.empty(m.weight.shape).normal_(generator=generator)
                    m.weight.copy_(w.to(dtype))
            x = torch.randn(batch, 3, image_size, image_size, generator=generator).to(dtype)
            logs = []
            for block in blocks:
                x = block(x)
                logs.append(math.log(float(x.var(correction=0))))
            total += sum(w * v for w, v in zip(weights, logs[1:]))
    return total / repeats


def test_deterministic_and_leaves_global_rng_alone(one_thread):
    s = structure()
    state = torch.get_rng_state()
    first = entropy_score(s, image_size=32, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert entropy_score(s, image_size=32, seed=3) == first  # bit-identical
    assert entropy_score(s, image_size=32, seed=4) != first


def test_matches_naive_float64_on_a_shallow_structure(one_thread):
    s = structure()
    weights = (1.0, 0.5, 1.0, 1.0, 6.0)
    expected = naive_score(s, 32, 2, weights, 2, seed=1, dtype=torch.float64)
    got = entropy_score(s, image_size=32, stage_weights=weights, seed=1)
    assert got == pytest.approx(expected, rel=1e-5)


def test_no_overflow_where_float32_would(one_thread):
    deep = structure(widths=(64, 128, 256, 256, 512), depth=4)
    weights = (0, 0, 1, 1, 6)
    value = entropy_score(deep, image_size=64, stage_weights=weights, repeats=1)
    assert math.isfinite(value)
    # the variance passes float32's 3.4e38 within the network: inf / nan without rescaling
    assert not math.isfinite(naive_score(deep, 64, 2, weights, 1, seed=0, dtype=torch.float32))
    expected = naive_score(deep, 64, 2, weights, 1, seed=0, dtype=torch.float64)
    assert value == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kind", ["entropy", "closed_form"])
def test_wider_and_deeper_score_higher(kind, one_thread):
    base = structure()
    wider = structure(widths=(32, 48, 64, 96, 128))
    deeper = structure(depth=2)
    kwargs = {"image_size": 32} if kind == "entropy" else {}
    values = {name: score(s, kind=kind, **kwargs)
              for name, s in [("base", base), ("wider", wider), ("deeper", deeper)]}
    assert values["wider"] > values["base"]
    assert values["deeper"] > values["base"]


def test_closed_form_formula():
    s = structure(widths=(16, 24, 32, 48, 64))
    # stem 3x3 on 3 channels, then per k1kx stage: 1x1 on C_in, 3x3 on the bottleneck
    running, stages = 0.5 * math.log(3 * 9), []
    for block in s[1:]:
        running += 0.5 * math.log(block.in_ch) + 0.5 * math.log(block.bottleneck * 9)
        stages.append(running)
    weights = (0.0, 1.0, 2.0, 0.5, 3.0)
    expected = sum(w * v for w, v in zip(weights, stages))
    assert closed_form_score(s, stage_weights=weights) == pytest.approx(expected, rel=1e-12)


def test_stage_weights_length_and_kind_are_checked():
    s = structure()
    with pytest.raises(ValueError, match="stage_weights has 3 values but the structure has 5"):
        entropy_score(s, stage_weights=(1, 1, 1))
    with pytest.raises(ValueError, match="stage_weights has 6 values"):
        closed_form_score(s, stage_weights=(1,) * 6)
    with pytest.raises(ValueError, match="unknown score kind 'zen'.*entropy, closed_form"):
        score(s, kind="zen")
