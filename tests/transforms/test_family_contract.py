"""Contract tests run over every registered transform family (identity, translation, gradients, points) and the
control-point layouts of ``family_cases.LAYOUTS``: a new family is covered by registering it, with no edit here."""

from __future__ import annotations

import pytest
import torch

import torchstn
from tests.transforms.family_cases import CASES, build

FAMILIES = CASES
SIZES_2D = [(5, 7), (1, 6), (4, 1), (8, 8)]
SIZES_3D = [(3, 4, 5), (1, 4, 2), (4, 4, 4)]


def rank(name: str) -> int:
    return build(name).spatial_rank


def _sizes(name):
    return SIZES_2D if rank(name) == 2 else SIZES_3D


def test_registry_lists_the_papers_families():
    for name in (
        "affine",
        "attention",
        "similarity",
        "translation",
        "fixed_scale_translation",
        "projective",
        "tps",
        "affine3d",
    ):
        assert name in FAMILIES


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_gives_back_the_input(name, align_corners):
    family = build(name)
    for size in _sizes(name):
        U = torch.rand(2, 3, *size)
        theta = family.identity().expand(2, -1)
        grid = family.grid(theta, size, align_corners=align_corners)
        assert grid.shape == (2, *size, len(size))
        V = torchstn.sample(U, grid, align_corners=align_corners)
        torch.testing.assert_close(V, U, atol=2e-6, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_whole_pixel_translation_moves_content_exactly(name, align_corners):
    n = rank(name)
    size = (6, 9) if n == 2 else (4, 5, 7)
    U = torch.rand(1, 2, *size, dtype=torch.float64)
    pixels = (2, -1) if n == 2 else (2, -1, 1)  # (x, y[, z]) whole pixels
    step = [(2.0 / (s - 1) if align_corners else 2.0 / s) for s in reversed(size)]  # x first
    family = build(name)
    theta = family.translation([p * st for p, st in zip(pixels, step)], dtype=torch.float64).unsqueeze(0)
    assert theta.shape == (1, family.num_params) and theta.dtype == torch.float64
    V = torchstn.sample(U, family.grid(theta, size, align_corners=align_corners), align_corners=align_corners)
    # V[..., z, y, x] = U[..., z + dz, y + dy, x + dx] where inside, 0 elsewhere
    expected = torch.zeros_like(U)
    src = [slice(max(p, 0), s + min(p, 0)) for p, s in zip(reversed(pixels), size)]
    dst = [slice(max(-p, 0), s + min(-p, 0)) for p, s in zip(reversed(pixels), size)]
    expected[(..., *dst)] = U[(..., *src)]
    torch.testing.assert_close(V, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_gradcheck_input_and_theta(name):
    torch.manual_seed(0)
    family = build(name)
    n = rank(name)
    size = (4, 5) if n == 2 else (3, 3, 4)
    U = torch.rand(2, 2, *size, dtype=torch.float64, requires_grad=True)
    theta0 = family.identity(dtype=torch.float64).expand(2, -1)
    theta = (theta0 + 0.05 * torch.randn_like(theta0)).requires_grad_()

    def f(U, theta):
        return torchstn.sample(U, family.grid(theta, size))

    assert torch.autograd.gradcheck(f, (U, theta), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_transform_points_agrees_with_grid(name):
    torch.manual_seed(1)
    family = build(name)
    n = rank(name)
    size = (5, 6) if n == 2 else (3, 4, 5)
    theta0 = family.identity().expand(3, -1)
    theta = theta0 + 0.1 * torch.randn_like(theta0)
    grid = family.grid(theta, size)
    pts = torchstn.coords.identity_grid(size).reshape(1, -1, n)
    mapped = family.transform_points(theta, pts.expand(3, -1, -1))
    torch.testing.assert_close(mapped.view_as(grid), grid, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_localisation_parameter_gets_a_gradient(name):
    torch.manual_seed(2)
    n = rank(name)
    size = (8, 8) if n == 2 else (4, 4, 4)
    in_features = 2 * torch.Size(size).numel()
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(in_features, (16, 16)), build(name))
    with torch.no_grad():  # leave the identity init so gradients reach below the head
        st.head.linear.weight.normal_(0, 1e-2)
    out = st(torch.rand(3, 2, *size))
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in st.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", FAMILIES)
def test_untrained_transformer_is_the_identity(name):
    n = rank(name)
    size = (6, 7) if n == 2 else (3, 4, 5)
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(torch.Size(size).numel() * 2), build(name))
    U = torch.rand(2, 2, *size)
    torch.testing.assert_close(st(U), U, atol=2e-6, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_half_precision_grid_is_finite_and_close(name):
    family = build(name)
    n = rank(name)
    size = (6, 7) if n == 2 else (3, 4, 5)
    theta = family.identity().expand(2, -1)
    g32 = family.grid(theta, size)
    g16 = family.grid(theta.to(torch.bfloat16), size)
    assert g16.dtype == torch.bfloat16 and torch.isfinite(g16).all()
    torch.testing.assert_close(g16.float(), g32, atol=2e-2, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_footprint_is_exact_for_matrix_families_and_left_to_the_grid_otherwise(name):
    """An affine map's footprint is one Jacobian per sample; projective and TPS ones vary over the image (None: the
    anti-aliased sampler estimates them from the grid)."""
    from torchstn.functional.antialias import affine_jacobian, grid_jacobian

    family = build(name)
    torch.manual_seed(0)
    theta = family.identity().expand(2, -1) + 0.1 * torch.randn(2, family.num_params)
    in_size, out_size = ((16, 12), (5, 7)) if rank(name) == 2 else ((8, 10, 12), (3, 4, 5))
    jac = family.footprint(theta, in_size, out_size)
    matrix = family.matrix(theta) if family.has_matrix else None
    if matrix is None or matrix.shape[-1] != matrix.shape[-2] + 1:
        assert jac is None
        return
    torch.testing.assert_close(jac, affine_jacobian(matrix, in_size, out_size))
    estimate = grid_jacobian(family.grid(theta, out_size).double(), in_size)  # an affine grid's differences agree
    torch.testing.assert_close(
        estimate, jac.double().view(2, *[1] * len(out_size), *jac.shape[1:]).expand_as(estimate), atol=1e-5, rtol=0
    )


def test_a_family_name_is_registered_once():
    with pytest.raises(torchstn.OptionError, match="'affine' is already registered"):
        torchstn.register_transform("affine")(torchstn.transforms.Translation)
    assert torchstn.transforms.Translation.name == "translation"


def test_translation_refuses_a_shift_of_another_rank_and_a_fixed_window_that_cannot_translate():
    with pytest.raises(torchstn.ShapeError, match=r"shift for transform 'affine3d' must hold 3 numbers \(x, y, z\)"):
        torchstn.get_transform("affine3d").translation((0.1, 0.2))
    window = torchstn.get_transform("fixed_scale_translation", scale=0.5, centre=(0.5, -0.5))
    torch.testing.assert_close(window.identity(), torch.tensor([0.5, -0.5]))
    with pytest.raises(torchstn.OptionError, match="fixed scale 0.5 is no pure translation"):
        window.translation((0.1, 0.2))
