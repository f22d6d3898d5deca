"""FGD and MGD feature losses: hand-computed values, masks, gradients, registry, distiller."""

import math

import pytest
import torch
from torch import nn

from distill.distillation import FEATURE_LOSSES, FeatureDistiller
from distill.distillation.fgd import FGDLoss, GcBlock, fgd_masks
from distill.distillation.mgd import MGDLoss

C, H, W = 2, 4, 4
# one image: boxes as fractions (xyxy); the last one is degenerate (zero width) and ignored
BOXES = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 0.5], [0.8, 0.8, 0.85, 0.85], [0.5, 0.5, 0.5, 0.9]]
S = [[[1.5 * math.sin(1 + 16 * c + 4 * i + j) for j in range(W)] for i in range(H)]
     for c in range(C)]
T = [[[1.2 * math.cos(2 + 16 * c + 3 * i - j) for j in range(W)] for i in range(H)]
     for c in range(C)]


def _t(x) -> torch.Tensor:
    return torch.tensor([x], dtype=torch.float32)


def _close(got: torch.Tensor, expected) -> None:
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=1e-5, atol=1e-6)


def _masks_by_hand(boxes, h, w):
    """Cell (i, j) is foreground when it overlaps a box with positive area; 1/area (max)."""
    fg = [[0.0] * w for _ in range(h)]
    for x1, y1, x2, y2 in boxes:
        cells = [(i, j) for i in range(h) for j in range(w)
                 if min(x2, (j + 1) / w) - max(x1, j / w) > 0
                 and min(y2, (i + 1) / h) - max(y1, i / h) > 0]
        for i, j in cells:
            fg[i][j] = max(fg[i][j], 1.0 / len(cells))
    n_bg = sum(v == 0 for row in fg for v in row)
    bg = [[(1.0 / n_bg if v == 0 else 0.0) for v in row] for row in fg]
    return fg, bg


def _att_by_hand(x, temp):
    c, h, w = len(x), len(x[0]), len(x[0][0])
    sp = [[sum(abs(x[k][i][j]) for k in range(c)) / c / temp for j in range(w)] for i in range(h)]
    z = sum(math.exp(v) for row in sp for v in row)
    sp = [[h * w * math.exp(v) / z for v in row] for row in sp]
    ch = [sum(abs(v) for row in x[k] for v in row) / (h * w) / temp for k in range(c)]
    z = sum(math.exp(v) for v in ch)
    return sp, [c * math.exp(v) / z for v in ch]


def _fgd_by_hand(s, t, boxes, alpha, beta, gamma, lambda_, temp):
    """FGD parts for one image; the global part for GcBlocks that are still the identity."""
    c, h, w = len(s), len(s[0]), len(s[0][0])
    fg, bg = _masks_by_hand(boxes, h, w)
    sp_t, ch_t = _att_by_hand(t, temp)
    sp_s, ch_s = _att_by_hand(s, temp)
    cells = [(k, i, j) for k in range(c) for i in range(h) for j in range(w)]
    d2 = {(k, i, j): (s[k][i][j] - t[k][i][j]) ** 2 for k, i, j in cells}
    att = {(k, i, j): sp_t[i][j] * ch_t[k] for k, i, j in cells}
    return {
        "fg": alpha * sum(fg[i][j] * att[k, i, j] * d2[k, i, j] for k, i, j in cells),
        "bg": beta * sum(bg[i][j] * att[k, i, j] * d2[k, i, j] for k, i, j in cells),
        "attention": gamma * (sum(abs(a - b) for ra, rb in zip(sp_t, sp_s) for a, b in zip(ra, rb))
                              + sum(abs(a - b) for a, b in zip(ch_t, ch_s))),
        "global": lambda_ * sum(d2.values()),
    }


def test_fgd_masks_known_grid():
    fg, bg = fgd_masks([torch.tensor(BOXES)], 1, H, W)
    q, t = 1 / 4, 1 / 3  # box 0 covers 4 cells, box 1 covers 3 (overlap (1, 1) takes 1/3)
    _close(fg[0], [[q, q, 0, 0], [q, t, t, t], [0, 0, 0, 0], [0, 0, 0, 1]])
    _close(bg[0], [[0, 0, 1 / 9, 1 / 9], [0, 0, 0, 0], [1 / 9] * 4, [1 / 9, 1 / 9, 1 / 9, 0]])
    hand_fg, hand_bg = _masks_by_hand(BOXES, H, W)
    _close(fg[0], hand_fg)
    _close(bg[0], hand_bg)
    # float32 fractions on a grid line stay on it: float32(0.3) * 160 = 48.0000019
    fg, _ = fgd_masks([torch.tensor([[0.3, 0.3, 0.6, 0.6]])], 1, 160, 160)
    cols = (fg[0] > 0).any(0).nonzero().flatten()
    assert (cols.min().item(), cols.max().item(), (fg[0] > 0).sum().item()) == (48, 95, 48 * 48)


def test_fgd_masks_without_boxes_all_background():
    for boxes in (None, [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 1.0, 1.0]])]):
        fg, bg = fgd_masks(boxes, 2, 3, 5)
        assert fg[0].sum() == 0
        _close(bg[0], [[1 / 15] * 5] * 3)
    _close(fg[1], [[1 / 15] * 5] * 3)
    assert bg[1].sum() == 0
    with pytest.raises(ValueError, match="2 images"):
        fgd_masks([torch.zeros(0, 4)] * 2, 3, 4, 4)


@pytest.mark.parametrize("temp", [0.5, 1.0])
def test_fgd_hand_case(temp):
    opts = {"alpha": 0.7, "beta": 0.3, "gamma": 0.2, "lambda_": 0.05, "temp": temp}
    loss = FGDLoss(C, **opts)
    parts = loss.parts(_t(S), _t(T), [torch.tensor(BOXES)])
    hand = _fgd_by_hand(S, T, BOXES, **opts)
    assert all(v > 0 for v in hand.values())
    for key, value in hand.items():
        assert parts[key].item() == pytest.approx(value, rel=1e-5), key
    total = loss(_t(S), _t(T), [torch.tensor(BOXES)]).item()
    assert total == pytest.approx(sum(hand.values()), rel=1e-5)
    # the /N normaliser: a duplicated batch gives the same value
    two = loss(torch.cat([_t(S)] * 2), torch.cat([_t(T)] * 2), [torch.tensor(BOXES)] * 2)
    assert two.item() == pytest.approx(total, rel=1e-5)


def test_fgd_without_boxes():
    loss = FGDLoss(C, alpha=1.0, beta=1.0)
    hand = _fgd_by_hand(S, T, [], 1.0, 1.0, 1e-3, 5e-6, 0.5)
    for boxes in (None, [torch.zeros(0, 4)]):
        parts = loss.parts(_t(S), _t(T), boxes)
        assert parts["fg"].item() == 0
        assert all(torch.isfinite(v) for v in parts.values())
        assert parts["bg"].item() == pytest.approx(hand["bg"], rel=1e-5)


def test_fgd_identical_inputs_zero():
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(0))
    loss = FGDLoss(6)
    with torch.no_grad():  # make the student block non-trivial, then copy it to the teacher side
        for p in loss.gc_student.parameters():
            p.copy_(torch.randn_like(p))
    boxes = [torch.tensor([[0.1, 0.2, 0.6, 0.7]]), torch.zeros(0, 4)]
    assert loss.parts(x, x.clone(), boxes)["global"].item() > 0
    loss.gc_teacher.load_state_dict(loss.gc_student.state_dict())
    parts = loss.parts(x, x.clone(), boxes)
    assert {k: v.item() for k, v in parts.items()} == {
        "fg": 0.0, "bg": 0.0, "attention": 0.0, "global": 0.0}


def test_gcblock_hand():
    block = GcBlock(4)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(1, 4, 2, 2, generator=gen)
    xs = x[0].reshape(4, 4).tolist()  # [channel][position]
    wm, bm = block.conv_mask.weight.reshape(4).tolist(), block.conv_mask.bias.item()
    logits = [sum(wm[c] * xs[c][p] for c in range(4)) + bm for p in range(4)]
    z = sum(math.exp(v) for v in logits)
    ctx = [sum(xs[c][p] * math.exp(logits[p]) / z for p in range(4)) for c in range(4)]
    c1, ln, _, c2 = block.transform
    w1, b1 = c1.weight.reshape(2, 4).tolist(), c1.bias.tolist()
    hid = [sum(w1[o][c] * ctx[c] for c in range(4)) + b1[o] for o in range(2)]
    mean = sum(hid) / 2
    var = sum((v - mean) ** 2 for v in hid) / 2
    g, b = ln.weight.reshape(2).tolist(), ln.bias.reshape(2).tolist()
    hid = [max(0.0, (v - mean) / math.sqrt(var + ln.eps) * g[o] + b[o]) for o, v in enumerate(hid)]
    w2, b2 = c2.weight.reshape(4, 2).tolist(), c2.bias.tolist()
    add = [sum(w2[c][o] * hid[o] for o in range(2)) + b2[c] for c in range(4)]
    expected = [[xs[c][p] + add[c] for p in range(4)] for c in range(4)]
    _close(block(x)[0].reshape(4, 4), expected)


def _mgd_by_hand(s, t, mask, alpha):
    """G = conv(identity) -> ReLU -> conv(2 * shift left, zero padded) + 0.5, per image."""
    total = 0.0
    for sn, tn, mn in zip(s, t, mask):
        for sc, tc in zip(sn, tn):
            h, w = len(sc), len(sc[0])
            r = [[max(0.0, sc[i][j] * mn[i][j]) for j in range(w)] for i in range(h)]
            for i in range(h):
                for j in range(w):
                    g = 2 * (r[i][j + 1] if j + 1 < w else 0.0) + 0.5
                    total += (g - tc[i][j]) ** 2
    return alpha * total / len(s)


def test_mgd_hand_case():
    loss = MGDLoss(C, alpha=0.3)
    conv1, _, conv2 = loss.generation
    with torch.no_grad():
        for conv in (conv1, conv2):
            conv.weight.zero_()
        for c in range(C):
            conv1.weight[c, c, 1, 1] = 1.0  # identity
            conv2.weight[c, c, 1, 2] = 2.0  # out[i, j] = 2 * in[i, j + 1]
        conv1.bias.zero_()
        conv2.bias.fill_(0.5)
    s = [S, [[[-v for v in row] for row in ch] for ch in S]]
    t = [T, T]
    mask = [[[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 1, 1]],
            [[0, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 0]]]
    expected = _mgd_by_hand(s, t, mask, 0.3)
    got = loss(torch.tensor(s), torch.tensor(t), None, mask=torch.tensor(mask)[:, None].float())
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_mgd_random_mask():
    loss = MGDLoss(3, mask_ratio=0.65)
    torch.manual_seed(7)
    mask = loss.random_mask(4, 64, 64)
    assert mask.shape == (4, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.mean().item() == pytest.approx(0.35, abs=0.02)
    assert not torch.equal(mask[0], mask[1])  # independent per image
    s, t = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    torch.manual_seed(11)
    drawn = loss(s, t)
    torch.manual_seed(11)
    assert loss(s, t, mask=loss.random_mask(4, 64, 64)).item() == drawn.item()
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="mask_ratio"):
            MGDLoss(3, mask_ratio=bad)


@pytest.mark.parametrize("name", ["fgd", "mgd"])
def test_gradients_student_and_params_not_teacher(name):
    gen = torch.Generator().manual_seed(1)
    loss = FEATURE_LOSSES.get(name)(4)
    s = torch.randn(2, 4, 6, 6, generator=gen, requires_grad=True)
    t = torch.randn(2, 4, 6, 6, generator=gen, requires_grad=True)
    loss(s, t, [torch.tensor([[0.1, 0.1, 0.5, 0.6]]), torch.zeros(0, 4)]).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss.parameters())
    if name == "fgd":  # the last convs start at zero, so they are the ones with a gradient now
        for block in (loss.gc_student, loss.gc_teacher):
            assert block.transform[-1].weight.grad.abs().sum() > 0
    else:
        assert all(p.grad.abs().sum() > 0 for p in loss.parameters())


@pytest.mark.parametrize("name,options", [("fgd", {"alpha": 2e-3, "lambda_": 1e-5}),
                                          ("mgd", {"alpha": 1e-4, "mask_ratio": 0.5})])
def test_registry_options_and_distiller(name, options):
    module = FEATURE_LOSSES.get(name)(8, **options)
    assert all(getattr(module, k) == v for k, v in options.items())
    with pytest.raises(ValueError, match="lamda"):
        FEATURE_LOSSES.get(name)(8, lamda=1.0)
    distiller = FeatureDistiller([3, 5], [4, 6], loss=name, options=options)
    assert all(isinstance(m, FGDLoss if name == "fgd" else MGDLoss) for m in distiller.losses)
    assert distiller.losses[1].alpha == options["alpha"]
    gen = torch.Generator().manual_seed(2)
    student = [torch.randn(2, 3, 8, 8, generator=gen, requires_grad=True),
               torch.randn(2, 5, 4, 4, generator=gen, requires_grad=True)]
    teacher = [torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True),
               torch.randn(2, 6, 4, 4, generator=gen, requires_grad=True)]
    boxes = [torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.6, 0.6, 0.9, 0.8]]), torch.zeros(0, 4)]
    out = distiller(student, teacher, boxes)
    assert set(out) == {"level0", "level1", "total"}
    assert torch.isfinite(out["total"]) and out["total"].item() > 0
    out["total"].backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in student)
    assert all(x.grad is None for x in teacher)
    assert all(a.weight.grad.abs().sum() > 0 for a in distiller.align)


@pytest.mark.parametrize("name", ["fgd", "mgd"])
def test_optimisation_reduces_loss(name):
    torch.manual_seed(0)
    loss = FEATURE_LOSSES.get(name)(8)
    teacher = torch.randn(2, 8, 8, 8)
    student = nn.Parameter(torch.randn(2, 8, 8, 8))
    boxes = [torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([[0.25, 0.5, 1.0, 1.0]])]

    def parts() -> dict[str, float]:
        with torch.no_grad():
            if name == "fgd":
                return {k: v.item() for k, v in loss.parts(student, teacher, boxes).items()}
            torch.manual_seed(123)  # MGD: the mean over the same 8 random masks each time
            return {"mgd": sum(loss(student, teacher).item() for _ in range(8)) / 8}

    before = parts()
    opt = torch.optim.Adam([student, *loss.parameters()], lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        loss(student, teacher, boxes).backward()
        opt.step()
    after = parts()
    # FGD: 0.064 -> 0.019; MGD starts at its floor for an uninformative student (~alpha*CHW)
    # and gets below it only as the student learns to encode the teacher: 0.0105 -> 0.0074
    factor = 0.5 if name == "fgd" else 0.8
    assert sum(after.values()) < factor * sum(before.values()), (before, after)
    assert all(after[k] < before[k] for k in before), (before, after)
