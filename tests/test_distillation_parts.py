"""Feature distillation parts: losses, FeatureDistiller (align + parameter-free BN), schedules."""

import math

import pytest
import torch
from torch import nn

from distill.distillation import (
    FEATURE_LOSSES,
    FeatureDistiller,
    WeightSchedule,
    cwd_loss,
    mimic_loss,
)


def feature_loss(name: str, tau: float):
    """The registered per-level loss module ``name`` (tau for cwd), called without boxes."""
    return FEATURE_LOSSES.get(name)(4, **({"tau": tau} if name == "cwd" else {}))

# N=1, C=2, H=W=2
S = [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]]]
T = [[[1.0, 0.0], [3.0, 5.0]], [[1.0, 0.0], [1.0, -1.0]]]


def _t(x):
    return torch.tensor([x], dtype=torch.float64)


def _cwd_by_hand(s, t, tau):
    """sum_c KL(softmax(t_c / tau) || softmax(s_c / tau)) * tau**2 / (N*C), with math only."""
    total = 0.0
    for sc, tc in zip(s, t):
        sv = [v / tau for row in sc for v in row]
        tv = [v / tau for row in tc for v in row]
        zs = sum(math.exp(v) for v in sv)
        zt = sum(math.exp(v) for v in tv)
        for a, b in zip(sv, tv):
            p_t, p_s = math.exp(b) / zt, math.exp(a) / zs
            total += p_t * (math.log(p_t) - math.log(p_s))
    return total * tau**2 / len(s)


def test_mimic_hand():
    # diffs 0,2,0,-1,-1,0,0,2 -> squares sum to 10 over 8 elements
    assert mimic_loss(_t(S), _t(T)).item() == pytest.approx(1.25)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_cwd_hand(tau):
    expected = _cwd_by_hand(S, T, tau)
    assert expected > 0
    assert cwd_loss(_t(S), _t(T), tau=tau).item() == pytest.approx(expected, rel=1e-6)
    assert feature_loss("cwd", tau)(_t(S), _t(T)).item() == pytest.approx(expected, rel=1e-6)


def test_cwd_closed_form_two_positions():
    # teacher uniform over 2 positions, student logits (ln 3, 0) -> p_s = (3/4, 1/4)
    s = torch.tensor([[[[math.log(3.0), 0.0]]]])
    t = torch.zeros(1, 1, 1, 2)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert cwd_loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_cwd_batch_normaliser():
    # two identical samples: the per-(N*C) average equals the one-sample value
    one = cwd_loss(_t(S), _t(T))
    two = cwd_loss(torch.cat([_t(S)] * 2), torch.cat([_t(T)] * 2))
    assert two.item() == pytest.approx(one.item(), rel=1e-9)


@pytest.mark.parametrize("name", ["mimic", "cwd"])
def test_zero_for_identical_positive_otherwise(name):
    fn = FEATURE_LOSSES.get(name)(3)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert abs(fn(x, x.clone()).item()) < 1e-6
    assert fn(x, x * 2 + 0.5).item() > 1e-4


@pytest.mark.parametrize("fn", [mimic_loss, cwd_loss])
def test_shape_mismatch_raises(fn):
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\).*\(1, 2, 4, 4\)"):
        fn(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 4, 4))


def test_feature_loss_registry_names_and_errors():
    assert {"mimic", "cwd"} <= set(FEATURE_LOSSES.names())
    with pytest.raises(ValueError, match=r"'kl'.*cwd.*mimic"):
        FEATURE_LOSSES.get("kl")
    with pytest.raises(ValueError, match=r"cwd: unknown option\(s\) \['alpha'\]"):
        FEATURE_LOSSES.get("cwd")(4, alpha=1.0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        FEATURE_LOSSES.get("cwd")(4, tau=0.0)


def test_norms_are_parameter_free_and_saved():
    d = FeatureDistiller([4, 8], [6, 8])
    sd = d.state_dict()
    for i, norm in enumerate(d.norm):
        assert isinstance(norm, nn.BatchNorm2d) and list(norm.parameters()) == []
        assert f"norm.{i}.running_mean" in sd and f"norm.{i}.running_var" in sd
        assert f"norm.{i}.num_batches_tracked" in sd
        assert sd[f"norm.{i}.running_mean"].shape == (d.teacher_channels[i],)
    param_ids = {id(p) for p in d.parameters()}
    for i, conv in enumerate(d.align):  # always_align=True: conv on both levels
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
        assert conv.bias is not None and id(conv.weight) in param_ids and id(conv.bias) in param_ids
        assert f"align.{i}.weight" in sd and f"align.{i}.bias" in sd
    assert sum(p.numel() for p in d.parameters()) == (4 * 6 + 6) + (8 * 8 + 8)


def test_identity_when_channels_equal_and_not_always_align():
    d = FeatureDistiller([4, 8], [6, 8], always_align=False)
    assert isinstance(d.align[0], nn.Conv2d) and isinstance(d.align[1], nn.Identity)
    assert d.describe() == [
        {"level": 0, "student_channels": 4, "teacher_channels": 6, "align": "conv1x1",
         "align_params": 30},
        {"level": 1, "student_channels": 8, "teacher_channels": 8, "align": "identity",
         "align_params": 0},
    ]


def test_forward_matches_manual_mimic_and_updates_bn_twice():
    torch.manual_seed(0)
    d = FeatureDistiller([3], [5], loss="mimic", level_weights=[2.0])
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    out = d([s], [t])

    def bn(x):  # train-mode BN, affine=False: batch mean and biased variance per channel
        m = x.mean(dim=(0, 2, 3), keepdim=True)
        v = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (x - m) / torch.sqrt(v + 1e-5)

    x = d.align[0](s)
    expected = 2.0 * ((bn(x) - bn(t)) ** 2).mean()
    assert out["level0"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["total"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert d.norm[0].num_batches_tracked.item() == 2  # student and teacher call


def test_spatial_resize_and_gradients():
    torch.manual_seed(0)
    d = FeatureDistiller([3, 4], [6, 4], loss="cwd")
    s = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True)]
    t = [torch.randn(2, 6, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    out = d(s, t)
    assert set(out) == {"level0", "level1", "total"}
    assert out["total"].item() > 0
    out["total"].backward()
    for conv in d.align:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert all(x.grad is not None for x in s)
    assert all(x.grad is None for x in t)


def test_level_weights_scale_levels():
    torch.manual_seed(0)
    s = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    t = [torch.randn(2, 5, 4, 4), torch.randn(2, 5, 2, 2)]
    base = FeatureDistiller([3, 3], [5, 5], loss="mimic")
    weighted = FeatureDistiller([3, 3], [5, 5], loss="mimic", level_weights=[2.0, 0.5])
    weighted.load_state_dict(base.state_dict())
    a, b = base(s, t), weighted(s, t)
    assert b["level0"].item() == pytest.approx(2.0 * a["level0"].item(), rel=1e-6)
    assert b["level1"].item() == pytest.approx(0.5 * a["level1"].item(), rel=1e-6)
    assert b["total"].item() == pytest.approx(b["level0"].item() + b["level1"].item(), rel=1e-6)


def test_construction_errors():
    with pytest.raises(ValueError, match=r"2 levels.*3"):
        FeatureDistiller([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"level_weights has 1 entries.*2 levels"):
        FeatureDistiller([1, 2], [1, 2], level_weights=[1.0])
    with pytest.raises(ValueError, match="unknown feature loss 'l1'"):
        FeatureDistiller([1], [1], loss="l1")


def test_forward_errors():
    d = FeatureDistiller([3, 4], [5, 6])
    good_s = [torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2)]
    good_t = [torch.randn(2, 5, 4, 4), torch.randn(2, 6, 2, 2)]
    with pytest.raises(ValueError, match=r"got 1 student feature maps.*2 levels"):
        d(good_s[:1], good_t)
    with pytest.raises(ValueError, match=r"level 1: teacher feature has 7 channels.*6"):
        d(good_s, [good_t[0], torch.randn(2, 7, 2, 2)])
    with pytest.raises(ValueError, match=r"level 0: student feature has 2 channels.*3"):
        d([torch.randn(2, 2, 4, 4), good_s[1]], good_t)


def test_sync_batchnorm_conversion():
    d = nn.SyncBatchNorm.convert_sync_batchnorm(FeatureDistiller([3, 4], [5, 6]))
    assert all(isinstance(n, nn.SyncBatchNorm) and not n.affine for n in d.norm)
    assert list(d.norm.parameters()) == []
    assert "norm.0.running_mean" in d.state_dict()


def test_schedule_cosine_linear_constant():
    cos = WeightSchedule()
    assert [cos(s, 100) for s in (0, 50, 100)] == pytest.approx([1.0, 0.55, 0.1])
    assert cos(-5, 100) == pytest.approx(1.0) and cos(500, 100) == pytest.approx(0.1)
    assert cos(25, 100) > cos(50, 100) > cos(75, 100)
    lin = WeightSchedule(kind="linear")
    assert [lin(s, 10) for s in (0, 5, 10)] == pytest.approx([1.0, 0.55, 0.1])
    const = WeightSchedule(kind="constant", start=0.7)
    assert {const(s, 10) for s in range(11)} == {0.7}


def test_schedule_step():
    sch = WeightSchedule(kind="step", start=2.0, milestones=(0.5, 0.75), gamma=0.1)
    got = [sch(s, 100) for s in (0, 49, 50, 74, 75, 100)]
    assert got == pytest.approx([2.0, 2.0, 0.2, 0.2, 0.02, 0.02])


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant", "step"])
def test_schedule_stop_at(kind):
    sch = WeightSchedule(kind=kind, stop_at=0.8)
    assert all(sch(s, 100) > 0 for s in range(80))
    assert all(sch(s, 100) == 0.0 for s in range(80, 101))
    assert sch(7, 10) > 0 and sch(8, 10) == 0.0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"kind": "exp"}, "kind"),
        ({"stop_at": 0.0}, "stop_at"),
        ({"stop_at": 1.5}, "stop_at"),
        ({"milestones": (0.75, 0.5)}, "milestones"),
        ({"milestones": (0.5, 1.0)}, "milestones"),
        ({"start": -1.0}, "start"),
        ({"end": -0.1}, "end"),
        ({"gamma": -0.5}, "gamma"),
    ],
)
def test_schedule_bad_values_raise(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        WeightSchedule(**kwargs)


def test_schedule_kind_error_lists_allowed_and_total_steps():
    with pytest.raises(ValueError, match="cosine, linear, constant, step"):
        WeightSchedule(kind="exp")
    with pytest.raises(ValueError, match="total_steps"):
        WeightSchedule()(0, 0)
