"""SpatialTransformer and its helpers: head init, bound, lazy features, parallel STs, lr groups, theta recording."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchstn
from torchstn.nn import ParallelSpatialTransformers, ThetaHead, theta_stats


def _st(transform="affine", size=(8, 8), channels=1, **kw):
    return torchstn.SpatialTransformer(torchstn.fc_localisation(channels * size[0] * size[1], (16,)), transform, **kw)


def test_head_starts_at_zero_weight_and_identity_bias():
    st = _st("tps", grid_size=3)
    assert torch.equal(st.head.linear.weight, torch.zeros(18, 16))
    torch.testing.assert_close(st.head.linear.bias, torchstn.get_transform("tps", grid_size=3).identity())


def test_out_size_resamples_and_feature_maps_with_many_channels():
    st = _st(size=(8, 8), channels=5, out_size=(4, 6))
    U = torch.rand(2, 5, 8, 8)
    V = st(U)
    assert V.shape == (2, 5, 4, 6)
    torch.testing.assert_close(V, torchstn.sample(U, torchstn.coords.identity_grid((4, 6))))


def test_lazy_in_features_materialises_with_identity():
    loc = nn.Sequential(nn.Flatten(), nn.Linear(64, 7), nn.ReLU())  # no out_features attribute
    st = torchstn.SpatialTransformer(loc, "attention")
    U = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(st(U), U, atol=2e-6, rtol=0)
    assert type(st.head.linear) is nn.Linear and st.head.linear.in_features == 7
    assert torch.equal(st.head.linear.weight, torch.zeros(3, 7))


def test_bound_keeps_theta_near_identity_with_unit_slope():
    head = ThetaHead(4, torch.tensor([1.0, 0.0, 0.0]), bound=0.5)
    with torch.no_grad():
        head.linear.weight.fill_(100.0)
    theta = head(torch.ones(2, 4))
    assert (theta - torch.tensor([1.0, 0.0, 0.0])).abs().max() <= 0.5
    head2 = ThetaHead(4, torch.tensor([1.0, 0.0, 0.0]), bound=0.5)
    x = torch.zeros(1, 4, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda b: ThetaHead.forward(head2, x) + 0 * b, torch.zeros(1))
    assert jac.shape[0] == 1
    with pytest.raises(torchstn.OptionError, match="bound"):
        ThetaHead(4, torch.zeros(3), bound=-1.0)


def test_return_theta_and_loc_input():
    st = _st("attention", size=(4, 4))
    U, loc_in = torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4)
    V, theta = st(U, loc_in, return_theta=True)
    assert V.shape == U.shape and theta.shape == (2, 3)


def test_record_theta_and_stats_without_mutating_modules():
    model = nn.Sequential(_st("affine"), _st("attention"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torchstn.record_theta(model) as rec:
        model(torch.rand(2, 1, 8, 8))
        model(torch.rand(2, 1, 8, 8))
    assert sorted(rec) == ["0", "1"] and len(rec["0"]) == 2 and rec["1"][0].shape == (2, 3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model(torch.rand(2, 1, 8, 8))
    assert len(rec["0"]) == 2  # hooks removed on exit
    stats = theta_stats(rec["0"][0])
    assert stats["theta_max"] == 1.0 and stats["theta_min"] == 0.0


def test_identity_penalty_pulls_towards_identity():
    st = _st("affine")
    with torch.no_grad():
        st.head.linear.bias.add_(0.3)
    opt = torch.optim.SGD(st.head.parameters(), lr=0.1)
    losses = []
    for _ in range(50):
        with torchstn.record_theta(st, detach=False) as rec:
            st(torch.rand(4, 1, 8, 8))
        loss = torchstn.identity_penalty(rec[""][0], st.family.identity())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1])


def test_param_groups_split_localisation_from_the_rest():
    model = nn.Sequential(_st("affine"), nn.Flatten(), nn.Linear(64, 10))
    groups = torchstn.param_groups(model, lr=0.01, loc_lr_mult=0.1, weight_decay=5e-4)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    loc_ids = {id(p) for p in model[0].parameters()}
    assert {id(p) for p in groups[1]["params"]} == loc_ids
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    torch.optim.SGD(groups, lr=0.01)  # accepted by an optimiser


def test_parallel_transformers_concatenate_channels():
    par = ParallelSpatialTransformers([_st("attention", channels=2, out_size=(4, 4)) for _ in range(3)])
    assert par(torch.rand(2, 2, 8, 8)).shape == (2, 6, 4, 4)


def test_conv_localisation_2d_and_3d():
    net = torchstn.conv_localisation(2, (60, 60))
    assert net(torch.rand(1, 2, 60, 60)).shape == (1, 20)
    net3 = torchstn.conv_localisation(1, (28, 28, 28), channels=4, fc=8)
    st3 = torchstn.SpatialTransformer(net3, "affine3d", out_size=(10, 28, 28))
    assert st3(torch.rand(1, 1, 28, 28, 28)).shape == (1, 1, 10, 28, 28)
    with pytest.raises(torchstn.ShapeError, match="too small"):
        torchstn.conv_localisation(1, (8, 8))


def test_conv_localisation_takes_an_int_size_and_names_the_option_that_fits():
    net = torchstn.conv_localisation(3, 32, channels=2, fc=4)  # a square image, as out_size=32 is
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(torchstn.ShapeError, match=r"\(16, 20, 24\) is too small.*at least 28; pass downsample=1"):
        torchstn.conv_localisation(1, (16, 20, 24))
    with pytest.raises(torchstn.ShapeError, match="pass kernel_size=3 with downsample=1"):
        torchstn.conv_localisation(1, (8, 8))
    torchstn.conv_localisation(1, (16, 20, 24), downsample=1, channels=2, fc=4)  # the named fix works
    with pytest.raises(torchstn.OptionError, match="downsample must be a positive int"):
        torchstn.conv_localisation(1, (28, 28), downsample=0)


def test_compile_fullgraph_after_an_eager_run_keeps_the_checks_out_of_the_graph():
    st = torchstn.SpatialTransformer(torchstn.conv_localisation(1, (28, 28), channels=2, fc=4), "affine")
    U = torch.rand(2, 1, 28, 28)
    loc_in = U.clone()
    expected = st(U, loc_in)
    compiled = torch.compile(st, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(U, loc_in), expected)


def test_channels_last_input_gives_a_contiguous_output_and_lazy_shapes_come_at_the_first_forward():
    """The two behaviours the SpatialTransformer docstring and docs/conventions.md state (probe #33)."""
    st = torchstn.SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), "affine")
    assert isinstance(st.head.linear.weight, nn.parameter.UninitializedParameter)
    out = st(torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous() and st.head.linear.weight.shape == (6, 4)


def test_module_moves_with_to_and_has_no_persistent_extras():
    st = _st("tps")
    keys = set(st.state_dict())
    assert not any("identity" in k for k in keys)
    st.to(torch.float64)
    assert st.head.identity.dtype == torch.float64
    out = st(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_a_head_of_ones_own_replaces_the_default_one():
    """``head=`` instead of replacing ``st.head`` after construction (co-localisation's window head does this)."""
    loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 4))
    head = torch.nn.Linear(4, 3)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.5, 0.0, 0.0]))  # attention: the central half, zoomed in
    st = torchstn.SpatialTransformer(loc, "attention", head=head)
    x = torch.rand(2, 2, 8, 8)
    v, theta = st(x, return_theta=True)
    assert st.head is head and torch.equal(theta, torch.tensor([[0.5, 0.0, 0.0]] * 2))
    torch.testing.assert_close(v, st.warp(x, theta))
    with pytest.raises(torchstn.errors.OptionError, match="bound= and in_features= configure the default head"):
        torchstn.SpatialTransformer(loc, "attention", head=head, bound=0.5)
    with pytest.raises(torchstn.errors.OptionError, match="head must be a torch.nn.Module"):
        torchstn.SpatialTransformer(loc, "attention", head=lambda f: f)


def test_head_gives_a_float32_theta_under_autocast():
    """Under bfloat16 autocast the regression head still computes theta in float32 (the grid follows theta)."""
    torch.manual_seed(0)
    head = ThetaHead(32, torch.tensor([1.0, 0, 0, 0, 1, 0]))
    with torch.no_grad():
        head.linear.weight.normal_(0, 0.1)
    features = torch.randn(5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theta = head(features)
        rounded = head.linear(features)  # what autocast alone gives: bfloat16
    assert theta.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    exact = head(features)
    assert torch.allclose(theta, exact, rtol=0, atol=1e-6)
    assert (rounded.float() - exact).abs().max() > 1e-4  # the test can tell the two apart


def test_head_under_autocast_keeps_float64_and_materialises_lazily():
    """The float32-theta path computes in the head's own dtype: a float64 head stays float64 (no dtype mismatch),
    and a lazy head first called under autocast infers its width."""
    identity = torch.tensor([1.0, 0, 0, 0, 1, 0])
    head64 = ThetaHead(8, identity).double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theta = head64(torch.randn(3, 8, dtype=torch.float64))
    assert theta.dtype == torch.float64
    lazy = ThetaHead(None, identity)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theta = lazy(torch.randn(3, 5))
    assert theta.dtype == torch.float32 and lazy.linear.in_features == 5
    assert torch.allclose(theta, identity.expand(3, 6))  # identity at init
