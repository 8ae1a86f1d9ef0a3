"""The sampler: modes, padding (including fill), batching, dtypes, border gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchstn
from torchstn.coords import identity_grid


def _grid(B=2, size=(5, 6), spread=1.5):
    return (torch.rand(B, *size, 2) * 2 - 1) * spread


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_matches_grid_sample(mode, padding_mode):
    U, g = torch.rand(2, 3, 7, 8), _grid()
    out = torchstn.sample(U, g, mode=mode, padding_mode=padding_mode)
    ref = F.grid_sample(U, g, mode=mode, padding_mode=padding_mode, align_corners=False)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_fill_padding_is_fill_outside_and_blends_at_the_edge(mode):
    U = torch.rand(2, 3, 7, 8)
    fill = torch.tensor([0.1, -0.5, 2.0])
    g = _grid()
    out = torchstn.sample(U, g, mode=mode, padding_mode="fill", fill_value=fill)
    # reference: embed U in a large canvas of fill and sample that with the same physical points
    big = fill.view(1, 3, 1, 1).expand(2, 3, 7 * 5, 8 * 5).clone()
    big[:, :, 14:21, 16:24] = U
    ref = F.grid_sample(big, g / 5, mode=mode, padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    far = torchstn.sample(U, torch.full((2, 3, 3, 2), 3.0), padding_mode="fill", fill_value=fill)
    torch.testing.assert_close(far, fill.view(1, 3, 1, 1).expand_as(far))


def test_volume_sampling_and_grid_broadcast():
    U = torch.rand(3, 2, 4, 5, 6)
    grid = identity_grid((4, 5, 6))  # batch 1: shared
    torch.testing.assert_close(torchstn.sample(U, grid), U, atol=2e-6, rtol=0)
    out = torchstn.sample(U, grid, mode="nearest", padding_mode="fill", fill_value=0.5)
    torch.testing.assert_close(out, U, atol=2e-6, rtol=0)


def test_mixed_dtypes_promote_and_return_input_dtype():
    U = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    out = torchstn.sample(U, identity_grid((4, 4)))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, U)
    out16 = torchstn.sample(U.to(torch.bfloat16), identity_grid((4, 4)))
    assert out16.dtype == torch.bfloat16


def test_gradients_at_borders_and_outside():
    # points straddling the border, outside the image, and inside, float64 finite differences
    torch.manual_seed(0)
    U = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[[[-1.07, 0.13], [1.03, -0.97], [0.31, 1.09], [-0.52, 0.21]]]], dtype=torch.float64)
    g.requires_grad_()
    for padding in ("zeros", "border", "fill"):
        assert torch.autograd.gradcheck(
            lambda U, g, p=padding: torchstn.sample(U, g, padding_mode=p, fill_value=0.3), (U, g), eps=1e-6, atol=1e-5
        )
    # a point fully outside with zero padding has zero gradient, not NaN
    far = torch.full((1, 1, 1, 2), 5.0, dtype=torch.float64, requires_grad=True)
    torchstn.sample(U, far).sum().backward()
    assert torch.equal(far.grad, torch.zeros_like(far))


def test_nearest_mode_passes_gradient_to_input():
    U = torch.rand(1, 1, 4, 4, requires_grad=True)
    torchstn.sample(U, identity_grid((4, 4)), mode="nearest").sum().backward()
    assert torch.equal(U.grad, torch.ones_like(U))


def test_non_finite_grid_policy():
    U = torch.rand(1, 1, 4, 4)
    g = identity_grid((4, 4)).clone()
    g[0, 1, 1, 0] = float("nan")
    with pytest.raises(torchstn.NonFiniteError, match="non-finite"):
        torchstn.sample(U, g)
    with pytest.raises(ValueError):
        torchstn.sample(U, g.masked_fill(torch.isnan(g), float("inf")))
    out = torchstn.sample(U, g, check_finite=False)  # opt out: behaves like grid_sample
    assert out.shape == U.shape


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fill_far_from_the_data_keeps_the_interior(mode, dtype):
    # fill used to be sample(x - fill) + fill: with |fill| >> the data the digits of x cancelled (core-fuzz F4): a
    # bf16 identity sample of [0, 1] data with fill -1000 came back all 0.0
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8).to(dtype)
    ident = identity_grid((8, 8), dtype=dtype)
    out = torchstn.sample(x, ident, mode=mode, padding_mode="fill", fill_value=-1000.0)
    assert out.dtype == dtype and torch.equal(out, x)  # every tap inside: the fill plays no part
    if dtype == torch.float32:
        assert torch.equal(torchstn.sample(x, ident, mode=mode, padding_mode="fill", fill_value=1e5), x)
    other_paths = [{"deterministic": True}] if mode != "bicubic" else []
    other_paths += [{"antialias": True}] if mode == "bilinear" else []
    for path in other_paths:
        assert torch.equal(torchstn.sample(x, ident, mode=mode, padding_mode="fill", fill_value=-1000.0, **path), x)
    # a grid that reaches outside: far points are the fill, the rest matches float64 at the same (rounded) points
    g = (torch.rand(2, 5, 6, 2, dtype=torch.float64) * 2.4 - 1.2).to(dtype)
    g[:, 0, 0] = 3.0
    ref = torchstn.sample(x.double(), g.double(), mode=mode, padding_mode="fill", fill_value=-1000.0)
    got = torchstn.sample(x, g, mode=mode, padding_mode="fill", fill_value=-1000.0)
    assert (got[:, :, 0, 0] == -1000).all()
    # the output's own rounding (half: one step near -1000), or float32 bicubic weights summing to 1 within 2e-6
    torch.testing.assert_close(got.double(), ref, atol=1000 * max(torch.finfo(dtype).eps, 2e-6), rtol=0)
