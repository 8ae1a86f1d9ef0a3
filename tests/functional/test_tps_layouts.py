"""TPS with any control-point layout: (rows, cols) lattices and explicit points, checked; the precomputed
single-product path agrees with the direct solve for each; square lattices are unchanged bit for bit."""

from __future__ import annotations

import pytest
import torch

import torchstn
from tests.transforms.family_cases import SCATTERED
from torchstn.errors import OptionError
from torchstn.functional import tps as tps_fn
from torchstn.transforms import ThinPlateSpline

LAYOUTS = [(2, 10), (3, 5), (5, 2), SCATTERED]
IDS = ["2x10", "3x5", "5x2", "points"]


@pytest.mark.parametrize("n", [2, 4, 5])
def test_a_square_lattice_given_as_rows_and_cols_is_the_same_family_bit_for_bit(n):
    torch.manual_seed(0)
    old, new = ThinPlateSpline(grid_size=n), ThinPlateSpline(layout=(n, n))
    assert new.layout == n and torch.equal(old.identity(), new.identity())
    theta = old.identity().expand(2, -1) + 0.1 * torch.randn(2, 2 * n * n)
    for ac in (False, True):
        assert torch.equal(old.grid(theta, (7, 9), align_corners=ac), new.grid(theta, (7, 9), align_corners=ac))
    assert torch.equal(tps_fn.lattice(n), tps_fn.lattice(n, n))


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_layout_identity_and_affine_reproduction(layout):
    fam = ThinPlateSpline(layout=layout)
    ctrl = tps_fn.control_points(fam.layout)  # (K, 2) float64
    assert fam.num_params == 2 * ctrl.shape[0]
    torch.testing.assert_close(fam.identity(dtype=torch.float64), ctrl.reshape(-1))
    size = (6, 11)
    for ac in (False, True):
        ident = fam.grid(fam.identity(dtype=torch.float64).unsqueeze(0), size, align_corners=ac)
        torch.testing.assert_close(ident, torchstn.coords.identity_grid(size, ac, dtype=torch.float64))
    A = torch.tensor([[[0.8, 0.3, 0.1], [-0.2, 1.1, -0.05]]], dtype=torch.float64)
    src = torchstn.functional.transform_points_affine(A, ctrl.unsqueeze(0))  # (1, K, 2)
    torch.testing.assert_close(fam.grid(src.reshape(1, -1), size), torchstn.affine_grid(A, size), atol=1e-10, rtol=0)


def test_lattice_rows_and_cols_order():
    pts = tps_fn.control_points((2, 10))  # top row left to right at y = -1, then the bottom row at y = 1
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)
    torch.testing.assert_close(pts[:10], torch.stack((x, -torch.ones_like(x)), 1))
    torch.testing.assert_close(pts[10:], torch.stack((x, torch.ones_like(x)), 1))


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("regularisation", [0.0, 0.1])
@pytest.mark.parametrize("kernel_eps", [0.0, 1e-6])
def test_precomputed_equals_direct_solve_for_every_layout(layout, regularisation, kernel_eps):
    torch.manual_seed(3)
    opts = {"layout": layout, "regularisation": regularisation, "kernel_eps": kernel_eps}
    fast, slow = ThinPlateSpline(**opts), ThinPlateSpline(**opts, precompute=False)
    theta = fast.identity(dtype=torch.float64).expand(4, -1)
    theta = theta + 0.1 * torch.randn(4, fast.num_params, dtype=torch.float64)
    for ac in (False, True):
        torch.testing.assert_close(
            fast.grid(theta, (5, 13), align_corners=ac), slow.grid(theta, (5, 13), align_corners=ac), atol=1e-10, rtol=0
        )


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_the_spline_interpolates_its_control_points(layout):
    torch.manual_seed(4)
    fam = ThinPlateSpline(layout=layout)
    theta = fam.identity(dtype=torch.float64).unsqueeze(0) + 0.1 * torch.randn(1, fam.num_params, dtype=torch.float64)
    mapped = fam.transform_points(theta, tps_fn.control_points(fam.layout).unsqueeze(0))
    torch.testing.assert_close(mapped.reshape(1, -1), theta, atol=1e-10, rtol=0)


def test_kernel_eps_is_close_to_the_exact_kernel_but_not_equal():
    torch.manual_seed(5)
    exact, eps = ThinPlateSpline(layout=(2, 10)), ThinPlateSpline(layout=(2, 10), kernel_eps=1e-6)
    theta = exact.identity(dtype=torch.float64).unsqueeze(0) + 0.2 * torch.randn(1, 40, dtype=torch.float64)
    diff = (exact.grid(theta, (32, 100)) - eps.grid(theta, (32, 100))).abs().max()
    assert 1e-9 < diff < 1e-5
    assert "kernel_eps=1e-06" in repr(eps) and "layout=(2, 10)" in repr(eps)


BAD = [
    (1, "grid_size must be an int >= 2"),
    ((1, 10), r"rows >= 2 and cols >= 2"),
    ((2, 0), r"rows >= 2 and cols >= 2"),
    ([[0.0, 0.0], [1.0, 1.0], [-2.0, -2.0]], "all on one line"),
    ([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], r"distinct: points 1 and 3 are both \(1.0, 0.0\)"),
    ([[0.0, float("nan")], [1.0, 0.0], [0.0, 1.0]], "finite"),
    ([[0.0, 0.0], [1.0, 0.0]], "at least 3 points"),
    ([[0.0, 0.0, 0.0]], r"\(K, 2\) points"),
    ("2x10", r"\(K, 2\) points"),
    ((2, 10.0), r"\(K, 2\) points"),
]


@pytest.mark.parametrize("layout,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_layouts_are_refused_with_a_clear_error(layout, message):
    with pytest.raises(OptionError, match=message):
        ThinPlateSpline(layout=layout)
    with pytest.raises(OptionError, match=message):
        tps_fn.tps_grid(torch.zeros(1, 4, 2), (3, 3), layout)  # the functions check a layout they are handed


def test_other_bad_options_and_the_ways_a_layout_arrives():
    with pytest.raises(OptionError, match="grid_size=3 or layout=..., not both"):
        ThinPlateSpline(grid_size=3, layout=(2, 10))
    for bad in (-1e-6, 0.5, True, "1e-6"):
        with pytest.raises(OptionError, match="kernel_eps must be a number in"):
            ThinPlateSpline(kernel_eps=bad)
    assert torchstn.get_transform("tps", layout=[2, 10]).layout == (2, 10)  # a list, as from a TOML config
    assert ThinPlateSpline(layout=torch.tensor(SCATTERED, dtype=torch.float64)).layout == SCATTERED  # a tensor
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(2 * 8 * 8), "tps", layout=(2, 3))
    assert st.family.num_params == 12 and st(torch.rand(2, 2, 8, 8)).shape == (2, 2, 8, 8)
    src = tps_fn.control_points(SCATTERED, dtype=torch.float32).unsqueeze(0)
    grid = tps_fn.tps_grid(src, (4, 5), [list(p) for p in SCATTERED])  # unchecked list: checked on the way in
    torch.testing.assert_close(grid, torchstn.coords.identity_grid((4, 5)), atol=1e-6, rtol=0)
