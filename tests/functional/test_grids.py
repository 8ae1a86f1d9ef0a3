"""Oracle tests of the grid generators: against F.affine_grid, affine special cases, and the TPS direct solve."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import torchstn
from torchstn.functional import tps as tps_fn


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(7, 5), (1, 4), (28, 28)])
def test_affine_grid_equals_torch(size, align_corners):
    theta = torch.eye(2, 3) + 0.3 * torch.randn(4, 2, 3)
    ours = torchstn.affine_grid(theta, size, align_corners)
    ref = F.affine_grid(theta, (4, 1, *size), align_corners=align_corners)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_3d_equals_torch(align_corners):
    theta = torch.eye(3, 4) + 0.3 * torch.randn(2, 3, 4)
    ours = torchstn.affine_grid(theta, (3, 5, 4), align_corners)
    ref = F.affine_grid(theta, (2, 1, 3, 5, 4), align_corners=align_corners)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_affine_grid_backward_equals_torch():
    theta = (torch.eye(2, 3) + 0.3 * torch.randn(3, 2, 3)).double().requires_grad_()
    w = torch.randn(3, 6, 5, 2, dtype=torch.float64)
    (g1,) = torch.autograd.grad((torchstn.affine_grid(theta, (6, 5)) * w).sum(), theta)
    (g2,) = torch.autograd.grad((F.affine_grid(theta, (3, 1, 6, 5), align_corners=False) * w).sum(), theta)
    torch.testing.assert_close(g1, g2)
    assert torch.autograd.gradgradcheck(lambda t: torchstn.affine_grid(t, (3, 2)), (theta,))


def test_named_families_equal_their_affine_matrix():
    torch.manual_seed(0)
    size = (6, 9)
    for name, theta in [
        ("attention", torch.tensor([[0.5, 0.2, -0.3]])),
        ("translation", torch.tensor([[0.2, -0.3]])),
        ("similarity", torch.tensor([[0.4, -0.2, 0.1, 0.3]])),
    ]:
        fam = torchstn.get_transform(name)
        torch.testing.assert_close(fam.grid(theta, size), torchstn.affine_grid(fam.matrix(theta), size))
    m = torchstn.get_transform("similarity").matrix(torch.tensor([[0.4, -0.2, 0.1, 0.3]]))
    scale = torch.exp(torch.tensor(-0.2))
    expected = torch.tensor(
        [
            [
                [torch.cos(torch.tensor(0.4)), -torch.sin(torch.tensor(0.4)), 0.1],
                [torch.sin(torch.tensor(0.4)), torch.cos(torch.tensor(0.4)), 0.3],
            ]
        ]
    )
    expected[:, :, :2] *= scale
    torch.testing.assert_close(m, expected)


def test_projective_with_zero_perspective_equals_affine():
    affine = torch.eye(2, 3).reshape(1, 6) + 0.2 * torch.randn(3, 6)
    proj = torch.cat((affine, torch.zeros(3, 2)), dim=1)
    for ac in (False, True):
        g_proj = torchstn.get_transform("projective").grid(proj, (7, 5), align_corners=ac)
        g_aff = torchstn.get_transform("affine").grid(affine, (7, 5), align_corners=ac)
        torch.testing.assert_close(g_proj, g_aff, atol=1e-6, rtol=1e-6)


def test_projective_division_is_guarded():
    # a homography whose horizon crosses the image: w = 1 + 2x changes sign inside
    theta = torch.tensor([[1.0, 0, 0, 0, 1, 0, 2.0, 0.0]], requires_grad=True)
    grid = torchstn.get_transform("projective").grid(theta, (8, 8))
    assert torch.isfinite(grid).all()
    out = torchstn.sample(torch.rand(1, 1, 8, 8), grid)
    out.sum().backward()
    assert torch.isfinite(theta.grad).all()
    # fp16 input is computed in fp32 and stays finite
    g16 = torchstn.get_transform("projective").grid(theta.detach().half(), (8, 8))
    assert g16.dtype == torch.float16 and torch.isfinite(g16).all()


def test_points_behind_the_horizon_go_far_outside_even_near_the_numerator_zero():
    # both numerators vanish at (0.25, 0.25), where w = 1 - 6 * 0.25 = -0.5: behind the horizon. Dividing by the
    # guard 1e-3 used to leave these points inside the image, reading it near (0, 0) (core-fuzz F3)
    fam = torchstn.get_transform("projective")
    theta = torch.tensor([[1.0, 0, -0.25, 0, 1.0, -0.25, -6.0, 0]], dtype=torch.float64, requires_grad=True)
    grid = fam.grid(theta, (4, 4))  # pixel (2, 2) sits at (0.25, 0.25)
    w = 1 - 6 * torchstn.coords.identity_grid((4, 4), dtype=torch.float64)[0, ..., 0]
    behind, front = w <= 1e-3, w > 1e-3
    assert behind[2, 2] and (grid[0][behind].abs() == 1e3).all()
    x = torch.arange(1.0, 17, dtype=torch.float64).view(1, 1, 4, 4)
    for padding, fill in (("zeros", 0.0), ("fill", -7.0)):
        out = torchstn.sample(x, grid, padding_mode=padding, fill_value=fill)
        assert (out[0, 0][behind] == fill).all()
    # in front of the horizon: the plain division, clamped to +-1e3 (unchanged)
    ident = torchstn.coords.identity_grid((4, 4), dtype=torch.float64)[0]
    expected = ((ident - 0.25) / w.unsqueeze(-1)).clamp(-1e3, 1e3)
    torch.testing.assert_close(grid[0][front], expected[front])
    (grad,) = torch.autograd.grad(torchstn.sample(x, grid).sum(), theta)
    assert torch.isfinite(grad).all()
    pts = torch.tensor([[[0.2501, 0.25], [0.2499, 0.25], [0.0, -0.5]]], dtype=torch.float64)
    mapped = torchstn.transform_points("projective", theta, pts)
    assert (mapped[0, :2].abs() == 1e3).all() and (mapped[0, 0] > 0).all() and mapped[0, 1, 0] < 0
    torch.testing.assert_close(mapped[0, 2], torch.tensor([-0.25, -0.75], dtype=torch.float64))
    nan = theta.detach().clone()
    nan[0, 0] = float("nan")  # a NaN numerator is not hidden behind the horizon
    assert torch.isnan(fam.grid(nan, (4, 4))[..., 0]).all()


def test_projective_perspective_matches_numpy_style_reference():
    theta = torch.tensor([[1.1, 0.1, 0.05, -0.1, 0.9, 0.1, 0.2, -0.1]], dtype=torch.float64)
    grid = torchstn.get_transform("projective").grid(theta, (3, 4))
    H = torch.cat((theta[0], torch.ones(1, dtype=torch.float64))).view(3, 3)
    pts = torchstn.coords.identity_grid((3, 4), dtype=torch.float64).view(-1, 2)
    hom = torch.cat((pts, torch.ones(12, 1, dtype=torch.float64)), 1) @ H.T
    torch.testing.assert_close(grid.view(-1, 2), hom[:, :2] / hom[:, 2:])


@pytest.mark.parametrize("grid_size", [2, 4, 5])
def test_tps_lattice_is_identity_and_reproduces_affine(grid_size):
    fam = torchstn.get_transform("tps", grid_size=grid_size)
    size = (9, 7)
    for ac in (False, True):
        ident = fam.grid(fam.identity().unsqueeze(0), size, align_corners=ac)
        torch.testing.assert_close(ident, torchstn.coords.identity_grid(size, ac), atol=1e-6, rtol=0)
    A = torch.tensor([[[0.8, 0.3, 0.1], [-0.2, 1.1, -0.05]]], dtype=torch.float64)
    ctrl = tps_fn.lattice(grid_size).unsqueeze(0)  # (1, K, 2)
    src = torchstn.functional.transform_points_affine(A, ctrl)  # the affine map's source positions
    g_tps = fam.grid(src.reshape(1, -1), size)
    torch.testing.assert_close(g_tps, torchstn.affine_grid(A, size), atol=1e-10, rtol=0)


@pytest.mark.parametrize("regularisation", [0.0, 0.1])
def test_tps_precomputed_equals_direct_solve(regularisation):
    torch.manual_seed(3)
    fast = torchstn.get_transform("tps", regularisation=regularisation)
    slow = torchstn.get_transform("tps", regularisation=regularisation, precompute=False)
    theta = fast.identity(dtype=torch.float64).expand(4, -1) + 0.1 * torch.randn(4, 32, dtype=torch.float64)
    for ac in (False, True):
        torch.testing.assert_close(
            fast.grid(theta, (11, 13), align_corners=ac),
            slow.grid(theta, (11, 13), align_corners=ac),
            atol=1e-10,
            rtol=0,
        )


def test_tps_interpolates_control_points():
    torch.manual_seed(4)
    fam = torchstn.get_transform("tps")
    theta = fam.identity().unsqueeze(0) + 0.1 * torch.randn(1, 32)
    mapped = fam.transform_points(theta, tps_fn.lattice(4, dtype=torch.float32).unsqueeze(0))
    torch.testing.assert_close(mapped.reshape(1, -1), theta, atol=1e-5, rtol=0)


def test_tps_regularisation_smooths_towards_affine():
    torch.manual_seed(5)
    theta = torchstn.get_transform("tps").identity().unsqueeze(0) + 0.2 * torch.randn(1, 32)
    bent = torchstn.get_transform("tps").grid(theta, (16, 16))
    smooth = torchstn.get_transform("tps", regularisation=100.0).grid(theta, (16, 16))

    # a second difference measures bending; the regularised spline bends less
    def bend(g):
        return (g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2]).abs().mean()

    assert bend(smooth) < 0.5 * bend(bent)


@pytest.mark.parametrize("align_corners", [False, True])
def test_similarity_positive_angle_turns_the_picture_counter_clockwise_on_screen(align_corners):
    # pins the documented direction (docs/conventions.md, Similarity): y points down, so on screen "up" is row 0.
    # A dot right of the centre must show up above it at +90 degrees, below it at -90, and at +30 degrees it must
    # have moved up (counter-clockwise), not down
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 7] = 1.0  # row 4 (centre), column 7 (right)
    fam = torchstn.get_transform("similarity")

    def dot(degrees):
        theta = torch.tensor([[math.radians(degrees), 0.0, 0.0, 0.0]], dtype=torch.float64)
        v = torchstn.sample(x, fam.grid(theta, (9, 9), align_corners=align_corners), align_corners=align_corners)
        return divmod(int(v.flatten().argmax()), 9)  # (row, column)

    assert dot(90) == (1, 4) and dot(-90) == (7, 4) and dot(180) == (4, 1)
    row, col = dot(30)
    assert row < 4 and col > 4  # up and still right: counter-clockwise on screen
