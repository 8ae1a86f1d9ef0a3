"""torch.compile parity and a tiny end-to-end learning check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchstn
from tests.transforms.family_cases import CASES, build


@pytest.fixture
def _fresh_dynamo():
    """A fresh Dynamo cache: every case compiles the same forward, and past the recompile limit torch would run it
    eagerly instead of checking it."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _fresh_st(transform, **kwargs):
    """A SpatialTransformer that never ran eagerly (a random head), and an input batch for it."""
    torch.manual_seed(0)
    family = build(transform)  # a registered name or a layout case of tests/transforms/family_cases.py
    shape = (2, 12, 12) if family.spatial_rank == 2 else (1, 6, 7, 8)
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(torch.Size(shape).numel(), (16,)), family, **kwargs)
    with torch.no_grad():
        st.head.linear.weight.normal_(0, 0.05)
    return st, torch.rand(4, *shape)


@pytest.mark.usefixtures("_fresh_dynamo", "one_thread")
@pytest.mark.parametrize("transform", CASES)
def test_compile_fullgraph_of_a_fresh_module(transform):
    """Compiled before any eager call: on Python <= 3.11 a lazily cached value (functools.cached_property's lock)
    failed here; fullgraph=True makes a graph break an error."""
    st, U = _fresh_st(transform)
    compiled = torch.compile(st, backend="eager", fullgraph=True)
    got, got_theta = compiled(U, return_theta=True)
    want, want_theta = st(U, return_theta=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_theta, want_theta, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("_fresh_dynamo")
def test_inductor_compile_parity_forward_and_backward():
    st, U = _fresh_st("tps", out_size=(10, 10))
    out = torch.compile(st, fullgraph=True)(U)  # inductor, before any eager call
    (g_comp,) = torch.autograd.grad(out.square().sum(), st.head.linear.weight)
    eager = st(U)
    (g_eager,) = torch.autograd.grad(eager.square().sum(), st.head.linear.weight)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_comp, g_eager, atol=1e-4, rtol=1e-4)


def _blobs(n, size=24, generator=None):
    """Random-sized Gaussian blobs at the centre, n images (n, 1, size, size)."""
    x = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(x, x, indexing="ij")
    sig = 0.15 + 0.15 * torch.rand(n, 1, 1, generator=generator)
    ang = torch.rand(n, 1, 1, generator=generator) * 3.14
    u = xx * torch.cos(ang) + yy * torch.sin(ang)
    v = -xx * torch.sin(ang) + yy * torch.cos(ang)
    return torch.exp(-(u**2 / (2 * sig**2) + v**2 / (2 * (0.5 * sig) ** 2))).unsqueeze(1)


def test_st_cnn_learns_to_undo_a_fixed_translation():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    shift = torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, -0.25]])  # content moved by (-0.3, +0.25)
    loc = torchstn.conv_localisation(1, (24, 24), channels=8, fc=16, downsample=1)
    st = torchstn.SpatialTransformer(loc, "affine")
    opt = torch.optim.Adam(st.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        target = _blobs(32, generator=g)
        moved = torchstn.sample(target, torchstn.affine_grid(shift.expand(32, -1, -1), (24, 24)))
        loss = nn.functional.mse_loss(st(moved), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 10, (first, last)
    # and the learned transform is the inverse translation
    theta = st.predict_theta(moved).mean(0).view(2, 3).detach()
    torch.testing.assert_close(theta[:, 2], torch.tensor([-0.3, 0.25]), atol=0.05, rtol=0)


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_torch_export_with_cold_caches_keeps_the_tps_basis_constant(transform):
    from torchstn.functional import tps as tps_fn

    tps_fn._DEVICE_CACHE.clear()
    tps_fn._grid_matrix_cpu64.cache_clear()
    st = torchstn.SpatialTransformer(
        torchstn.fc_localisation(12 * 12, (16,)), transform, out_size=(9, 11), check_finite=False
    ).eval()
    U = torch.rand(2, 1, 12, 12)
    program = torch.export.export(st, (U,))
    assert "linalg" not in str(program.graph)  # the theta-independent solve is not in the exported graph
    for key in tps_fn._DEVICE_CACHE.values():
        assert type(key) is torch.Tensor  # no fake/traced tensor was cached
    U2 = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(program.module()(U2), st(U2))
