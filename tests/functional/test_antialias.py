"""Anti-aliased sampling: exactness where nothing downsamples, anti-aliasing where it does, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

import torchstn
from torchstn.coords import identity_grid
from torchstn.functional.affine import affine_grid
from torchstn.functional.antialias import affine_jacobian, footprint_plan, grid_jacobian, sample_antialiased


def _checker(n: int, dtype=torch.float32) -> torch.Tensor:
    """(1, 1, n, n) checkerboard of 1-pixel squares, mean 0.5."""
    i = torch.arange(n, dtype=dtype)
    return ((i.view(n, 1) + i.view(1, n)) % 2).view(1, 1, n, n)


def _affine(scale_x=1.0, scale_y=1.0, degrees=0.0, tx=0.0, ty=0.0, dtype=torch.float32) -> torch.Tensor:
    """(1, 2, 3) output->input matrix: rotate, then scale the normalised extent read (scale > 1 reads more)."""
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    lin = rot @ torch.diag(torch.tensor([scale_x, scale_y], dtype=torch.float64))
    return torch.cat((lin, torch.tensor([[tx], [ty]], dtype=torch.float64)), 1).unsqueeze(0).to(dtype)


# ------------------------------------------------------------------------------------------ no downsampling: exact
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "matrix, out_size",
    [
        (_affine(), (12, 12)),  # identity
        (_affine(0.5, 0.8, tx=0.1), (24, 17)),  # upsampling (footprint < 1 px on both axes)
        (_affine(degrees=37.0, tx=-0.05), (12, 12)),  # pure rotation, footprint exactly 1 px
        (_affine(0.5, 1.0, degrees=90.0), (12, 24)),  # rotation + upsampling along one axis
    ],
)
def test_no_downsampling_is_plain_bilinear_bit_for_bit(matrix, out_size, align_corners):
    torch.manual_seed(0)
    U = torch.rand(2, 3, 12, 12)  # square: a rotation in normalised coordinates is one in pixels
    grid = affine_grid(matrix.expand(2, -1, -1), out_size, align_corners)
    for padding in ("zeros", "border", "reflection"):
        plain = torchstn.sample(U, grid, padding_mode=padding, align_corners=align_corners)
        aa = torchstn.sample(U, grid, padding_mode=padding, align_corners=align_corners, antialias=True)
        assert torch.equal(aa, plain)


def test_spatial_transformer_at_identity_init_returns_input():
    loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 16 * 16, 8))
    for family in ("affine", "projective", "tps"):
        st = torchstn.SpatialTransformer(loc, family, in_features=8, antialias=True)
        x = torch.rand(3, 2, 16, 16)
        torch.testing.assert_close(st(x), x, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ anti-aliasing
def test_checkerboard_4x_gives_the_mean_where_bilinear_aliases():
    x = _checker(64)
    # a 4x zoom-out shifted by half a pixel so that bilinear reads land on pixel centres: pure aliasing (all 0)
    grid = affine_grid(_affine(tx=1 / 64, ty=1 / 64), (16, 16))
    plain = torchstn.sample(x, grid)
    aa = torchstn.sample(x, grid, antialias=True)
    assert (plain - 0.5).abs().min() > 0.49  # every output is 0 or 1
    inner = aa[..., 1:-1, 1:-1]  # the shift makes the last row and column reach into the zero padding
    torch.testing.assert_close(inner, torch.full_like(inner, 0.5), atol=0.02, rtol=0)
    # the same with a rotation, where no alignment trick helps bilinear either
    grid = affine_grid(_affine(degrees=30.0, scale_x=0.5, scale_y=0.5), (8, 8))  # 4x: 32 px read by 8 px
    aa = torchstn.sample(x, grid, antialias=True)
    plain = torchstn.sample(x, grid)
    assert (aa - 0.5).abs().max() < 0.06 < (plain - 0.5).abs().max()


def test_anisotropic_scale_blurs_only_along_x():
    n = 32
    i = torch.arange(n, dtype=torch.float32)
    columns = (i % 2).view(1, 1, 1, n).expand(1, 1, n, n)  # varies along x (1-pixel stripes)
    rows = torch.rand(1, 1, n, 1).expand(1, 1, n, n)  # varies along y only
    grid = identity_grid((n, n // 4))  # 4x along x, 1x along y
    aa_cols = torchstn.sample(columns, grid, antialias=True)
    torch.testing.assert_close(aa_cols, torch.full_like(aa_cols, 0.5))  # x stripes averaged away
    aa_rows = torchstn.sample(rows, grid, antialias=True)
    torch.testing.assert_close(aa_rows, rows[..., : n // 4])  # y detail kept exactly
    J = grid_jacobian(grid, (n, n))
    level, span, taps = footprint_plan(J)
    assert taps == [4, 1] and float(level.max()) == 0.0  # 4 full-resolution taps along x, none along y
    torch.testing.assert_close(span[0, 0, 0], torch.tensor([3.0, 0.0]))


def test_batch_elements_with_different_scales_get_different_footprints():
    x = _checker(32).expand(2, 1, 32, 32)
    theta = torch.cat((_affine(0.25, 0.25), _affine(1.0, 1.0)))  # element 0: 1x, element 1: 4x
    grid = affine_grid(theta, (8, 8))
    level, _, _ = footprint_plan(affine_jacobian(theta, (32, 32), (8, 8)))
    assert float(level[0]) == 0.0 and float(level[1]) > 1.0
    aa = torchstn.sample(x, grid, antialias=True)
    assert torch.equal(aa[0], torchstn.sample(x[:1], grid[:1])[0])  # no downsampling: plain bilinear
    torch.testing.assert_close(aa[1], torch.full_like(aa[1], 0.5))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(37, 41), (40, 32)])
def test_linear_ramp_is_preserved_inside(size, align_corners):
    # every stage (pyramid of area means, bilinear reads, taps, blending) reproduces a linear function exactly, so
    # any offset in the level geometry (odd sizes, align_corners) would show up here
    H, W = size
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    U = (0.3 * xx - 0.7 * yy + 2.0).view(1, 1, H, W)
    theta = _affine(0.3, 0.35, degrees=25.0, tx=0.02, dtype=torch.float64)  # ~5x zoom-out into the middle
    grid = affine_grid(theta, (3, 3), align_corners)
    pix = torchstn.coords.matrix_to_pixel(theta, (H, W), (3, 3), align_corners)[0]  # output px -> input px
    rows, cols = torch.meshgrid(
        torch.arange(3.0, dtype=torch.float64), torch.arange(3.0, dtype=torch.float64), indexing="ij"
    )
    ux = pix[0, 0] * cols + pix[0, 1] * rows + pix[0, 2]
    uy = pix[1, 0] * cols + pix[1, 1] * rows + pix[1, 2]
    expected = 0.3 * ux - 0.7 * uy + 2.0
    for share in (math.inf, 2.0):
        out = sample_antialiased(U, grid, align_corners=align_corners, tap_share=share)
        torch.testing.assert_close(out[0, 0], expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "fill"])
def test_padding_modes(padding_mode):
    U = torch.full((1, 2, 16, 16), 0.8)
    grid = affine_grid(_affine(3.0, 3.0), (6, 6))  # 8x zoom-out that reads far outside the image
    out = torchstn.sample(U, grid, padding_mode=padding_mode, fill_value=0.25, antialias=True)
    if padding_mode in ("border", "reflection"):  # outside looks like the image: stays constant
        torch.testing.assert_close(out, torch.full_like(out, 0.8))
    else:  # far outside reads the padding value, the image region a blend that stays within the two values
        pad = 0.0 if padding_mode == "zeros" else 0.25
        torch.testing.assert_close(out[..., 0, 0], torch.full_like(out[..., 0, 0], pad))
        assert float(out.min()) >= pad - 1e-6 and float(out.max()) <= 0.8 + 1e-6
        assert float(out[..., 2:4, 2:4].min()) > pad + 0.1  # the centre sees the image
    fill = torch.tensor([0.1, 0.9])  # per-channel fill
    out = torchstn.sample(U, grid, padding_mode="fill", fill_value=fill, antialias=True)
    torch.testing.assert_close(out[0, :, 0, 0], fill)


def test_volumes_and_dtypes():
    n = 16
    i = torch.arange(n, dtype=torch.float64)
    checker = ((i.view(n, 1, 1) + i.view(1, n, 1) + i.view(1, 1, n)) % 2).view(1, 1, n, n, n)
    out = torchstn.sample(checker, identity_grid((4, 4, 4), dtype=torch.float64), antialias=True)
    torch.testing.assert_close(out, torch.full_like(out, 0.5))
    assert out.dtype == torch.float64
    half = torchstn.sample(_checker(16).to(torch.bfloat16), identity_grid((4, 4)), antialias=True)
    assert half.dtype == torch.bfloat16
    # a half-precision volume: torch has no CPU avg_pool3d for these dtypes, the pyramid upcasts for it
    for dtype in (torch.float16, torch.bfloat16):
        vol = checker.to(dtype).requires_grad_()
        out = torchstn.sample(vol, identity_grid((4, 4, 4), dtype=dtype), antialias=True)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), torch.full(out.shape, 0.5))
        out.sum().backward()
        assert vol.grad is not None and vol.grad.dtype == dtype


def test_matrix_and_grid_footprints_agree():
    theta = torch.cat((_affine(0.9, 0.4, degrees=20.0), _affine(0.6, 0.6, degrees=-70.0)))
    grid = affine_grid(theta, (7, 9))
    J = affine_jacobian(theta, (40, 50), (7, 9))
    torch.testing.assert_close(grid_jacobian(grid, (40, 50)), J.view(2, 1, 1, 2, 2).expand(2, 7, 9, 2, 2))
    U = torch.rand(2, 3, 40, 50)
    torch.testing.assert_close(
        torchstn.sample(U, grid, antialias=True, jacobian=J),
        torchstn.sample(U, grid, antialias=True),
        atol=1e-5,
        rtol=0,
    )


# ------------------------------------------------------------------------------------------ gradients
# The randomised sweep over the option space is tests/functional/test_properties_antialias_grad.py.
@pytest.mark.parametrize("in_size, out_size, scale", [(32, 8, 0.9), (16, 4, 1.0), (16, 8, 1.0)])
def test_grid_gradient_of_a_rotated_uniform_zoom_out(in_size, out_size, scale):
    # a rotation with a uniform scale has an isotropic footprint: both edges are equally long, and the level used to
    # follow their plain maximum, whose derivative jumps there (the theta gradient was off by up to 50 %)
    torch.manual_seed(0)
    x = torch.rand(1, 1, in_size, in_size, dtype=torch.float64)
    theta = _affine(scale, scale, degrees=math.degrees(0.3), tx=0.0537, dtype=torch.float64)

    def loss(t):
        grid = torch.nn.functional.affine_grid(t, (1, 1, out_size, out_size), align_corners=False)
        return torchstn.sample(x, grid, antialias=True).sum()

    (grad,) = torch.autograd.grad(loss(theta.requires_grad_()), theta)
    eps, numeric = 1e-6, torch.empty(6, dtype=torch.float64)
    with torch.no_grad():
        for i in range(6):
            step = torch.zeros(6, dtype=torch.float64)
            step[i] = eps
            numeric[i] = (loss(theta + step.view(1, 2, 3)) - loss(theta - step.view(1, 2, 3))) / (2 * eps)
    torch.testing.assert_close(grad.flatten(), numeric, atol=1e-6, rtol=0)


def test_spatial_transformer_antialias_trains_localisation():
    torch.manual_seed(0)
    loc = torchstn.fc_localisation(32 * 32, hidden=(8,))
    st = torchstn.SpatialTransformer(loc, "affine", out_size=(8, 8), antialias=True)
    with torch.no_grad():  # start zoomed out and slightly rotated, so the footprint path carries gradients
        st.head.linear.bias.copy_(torch.tensor([1.2, 0.1, 0.0, -0.1, 1.3, 0.0]))
    x = torch.rand(2, 1, 32, 32)
    v, theta = st(x, return_theta=True)
    torch.testing.assert_close(v, torchstn.sample(x, affine_grid(theta.view(-1, 2, 3), (8, 8)), antialias=True))
    v.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in st.parameters())
    assert "antialias=True" in repr(st)


# ------------------------------------------------------------------------------------------ errors
def test_bad_combinations_raise_clear_errors():
    U, grid = torch.rand(1, 1, 8, 8), identity_grid((2, 2))
    for mode in ("nearest", "bicubic"):
        with pytest.raises(torchstn.OptionError, match="antialias"):
            torchstn.sample(U, grid, mode=mode, antialias=True)
        with pytest.raises(torchstn.OptionError, match="antialias"):
            torchstn.SpatialTransformer(torch.nn.Flatten(), "affine", in_features=64, mode=mode, antialias=True)
    with pytest.raises(torchstn.OptionError, match="jacobian"):
        torchstn.sample(U, grid, jacobian=torch.eye(2).unsqueeze(0))
    with pytest.raises(torchstn.ShapeError, match="jacobian"):
        torchstn.sample(U, grid, antialias=True, jacobian=torch.eye(3).unsqueeze(0))
    with pytest.raises(torchstn.ShapeError, match="jacobian"):
        torchstn.sample(U, grid, antialias=True, jacobian=torch.rand(1, 3, 3, 2, 2))
    with pytest.raises(torchstn.OptionError, match="tap_share"):
        sample_antialiased(U, grid, tap_share=0.5)
    with pytest.raises(torchstn.OptionError, match="padding_mode"):
        sample_antialiased(U, grid, padding_mode="zero")
    nan_grid = grid.clone()
    nan_grid[0, 0, 0, 0] = float("nan")
    with pytest.raises(torchstn.NonFiniteError):
        torchstn.sample(U, nan_grid, antialias=True)  # the default check
    out = torchstn.sample(U, nan_grid, antialias=True, check_finite=False)  # opted out: NaN footprints count as
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out[0, 0, 1, 1])  # no zoom-out, as grid_sample would read
    with pytest.raises(torchstn.DTypeError):
        torchstn.sample(U, grid, antialias=True, jacobian=torch.eye(2, dtype=torch.int64).unsqueeze(0))
