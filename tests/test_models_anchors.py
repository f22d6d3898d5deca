"""Anchors and the box coder."""

import math

import pytest
import torch

from distill.models.anchors import AnchorGenerator, BoxCoder, level_sizes

STRIDES = [8, 16, 32, 64, 128]


def test_level_sizes_ceil():
    assert level_sizes((128, 128), STRIDES) == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert level_sizes((100, 200), [8, 16]) == [(13, 25), (7, 13)]


def test_anchor_count():
    gen = AnchorGenerator(STRIDES)
    assert gen.num_anchors == 9
    assert gen((128, 128)).shape == (9 * (256 + 64 + 16 + 4 + 1), 4)
    assert gen((128, 256)).shape == (9 * (512 + 128 + 32 + 8 + 2), 4)


def test_first_anchors_exact():
    a = AnchorGenerator(STRIDES)((128, 128))
    half1 = 32 * 2 ** (1 / 3) / 2  # octave 1, aspect 1:1, stride 8
    expected = torch.tensor(
        [
            [-12.0, -12.0, 20.0, 20.0],  # stride 8, centre (4, 4), size 4 * 8
            [4 - 22.4, 4 - 11.2, 4 + 22.4, 4 + 11.2],  # aspect (1.4, 0.7)
            [4 - 11.2, 4 - 22.4, 4 + 11.2, 4 + 22.4],  # aspect (0.7, 1.4)
            [4 - half1, 4 - half1, 4 + half1, 4 + half1],  # next octave
        ]
    )
    torch.testing.assert_close(a[:4], expected)
    # next location along the row (x + 8), then the first one of the second row (y + 8)
    torch.testing.assert_close(a[9], torch.tensor([-4.0, -12.0, 28.0, 20.0]))
    torch.testing.assert_close(a[16 * 9], torch.tensor([-12.0, -4.0, 20.0, 28.0]))
    # first anchor of stride 16
    torch.testing.assert_close(a[256 * 9], torch.tensor([-24.0, -24.0, 40.0, 40.0]))
    # last anchor: stride 128, centre 64, octave 2, aspect (0.7, 1.4)
    base = 4 * 128 * 2 ** (2 / 3)
    hx, hy = base * 0.7 / 2, base * 1.4 / 2
    torch.testing.assert_close(a[-1], torch.tensor([64 - hx, 64 - hy, 64 + hx, 64 + hy]))


def test_anchor_cache():
    gen = AnchorGenerator(STRIDES)
    assert gen((128, 128)) is gen((128, 128), "cpu")
    assert gen((256, 256)) is not gen((128, 128))


def test_matches_effdet_anchors():
    effdet_anchors = pytest.importorskip("effdet.anchors")
    aspects = [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]
    ref = effdet_anchors.Anchors(3, 7, 3, aspects, 4.0, (128, 256)).boxes[:, [1, 0, 3, 2]]
    torch.testing.assert_close(AnchorGenerator(STRIDES)((128, 256)), ref)


def test_encode_known_values():
    coder = BoxCoder()
    deltas = coder.encode(torch.tensor([[5.0, 5.0, 25.0, 15.0]]), torch.tensor([[0.0, 0, 10, 10]]))
    torch.testing.assert_close(deltas, torch.tensor([[1.0, 0.5, math.log(2.0), 0.0]]))


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    wh = torch.rand(50, 2, generator=g) * 50 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    xy = torch.rand(50, 2, generator=g) * 100
    wh = torch.rand(50, 2, generator=g) * 50 + 1
    anchors = torch.cat([xy, xy + wh], dim=1)
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes)


def test_decode_clamps_size():
    coder = BoxCoder()
    box = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0, 16, 16]]))
    torch.testing.assert_close(box, torch.tensor([[8 - 500.0, 8 - 500.0, 8 + 500.0, 8 + 500.0]]))
