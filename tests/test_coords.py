"""The coordinate convention and the converters to pixel matrices and displacement fields."""

from __future__ import annotations

import pytest
import torch

import torchstn
from torchstn import coords


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_grid_matches_pixel_centres(align_corners):
    g = coords.identity_grid((3, 4), align_corners)
    if align_corners:
        assert g[0, 0, 0].tolist() == [-1.0, -1.0] and g[0, -1, -1].tolist() == [1.0, 1.0]
    else:
        torch.testing.assert_close(g[0, 0, 0], torch.tensor([-0.75, -2 / 3]))
    assert g.shape == (1, 3, 4, 2)


@pytest.mark.parametrize("align_corners", [False, True])
def test_pixel_matrix_round_trip_and_meaning(align_corners):
    torch.manual_seed(0)
    theta = torch.eye(2, 3, dtype=torch.float64) + 0.2 * torch.randn(3, 2, 3, dtype=torch.float64)
    in_size, out_size = (10, 14), (6, 8)
    pix = coords.matrix_to_pixel(theta, in_size, out_size, align_corners)
    back = coords.matrix_from_pixel(pix, in_size, out_size, align_corners)
    torch.testing.assert_close(back, theta)
    # meaning: output pixel (col, row) reads input pixel pix @ (col, row, 1); the grid agrees
    grid = torchstn.affine_grid(theta, out_size, align_corners)  # normalised
    cols, rows = torch.meshgrid(torch.arange(8.0), torch.arange(6.0), indexing="xy")
    pts = torch.stack((cols, rows, torch.ones_like(cols)), -1).double()  # (6, 8, 3)
    src_pix = pts @ pix[0].T  # (6, 8, 2)
    to_norm = coords.normalised_from_pixel(in_size, align_corners)
    src_norm = torch.cat((src_pix, torch.ones(6, 8, 1, dtype=torch.float64)), -1) @ to_norm[:2].T
    torch.testing.assert_close(src_norm, grid[0])


def test_src_to_dst_is_the_inverse_and_matches_opencv_convention():
    # a pure shift: output reads input 2 pixels to the right -> forward (src->dst) map moves content 2 pixels left
    theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
    fwd = coords.matrix_to_pixel(theta, (4, 8), (4, 8), direction="src_to_dst")
    torch.testing.assert_close(fwd, torch.tensor([[[1.0, 0.0, -2.0], [0.0, 1.0, 0.0]]]))
    torch.testing.assert_close(coords.matrix_from_pixel(fwd, (4, 8), (4, 8), direction="src_to_dst"), theta)


def test_projective_pixel_conversion_round_trip():
    H = torch.eye(3).unsqueeze(0) + 0.05 * torch.randn(1, 3, 3)
    pix = coords.matrix_to_pixel(H, (5, 6), (7, 8), align_corners=True)
    assert pix.shape == (1, 3, 3)
    torch.testing.assert_close(coords.matrix_from_pixel(pix, (5, 6), (7, 8), align_corners=True), H, atol=1e-5, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("order", ["ij", "xy"])
def test_displacement_round_trip_and_units(align_corners, order):
    torch.manual_seed(1)
    theta = torch.eye(3, 4) + 0.1 * torch.randn(2, 3, 4)
    grid = torchstn.affine_grid(theta, (3, 4, 5), align_corners)
    flow = coords.grid_to_displacement(grid, align_corners, order)
    assert flow.shape == (2, 3, 3, 4, 5)
    torch.testing.assert_close(coords.displacement_to_grid(flow, align_corners, order), grid, atol=1e-5, rtol=0)
    # a whole-voxel shift along x shows up as exactly 1.0 in the x channel
    shift = torch.zeros(1, 3, 4)
    shift[0, 0, 3] = 2.0 / 5 if not align_corners else 2.0 / 4
    flow = coords.grid_to_displacement(
        torchstn.affine_grid(torch.eye(3, 4).unsqueeze(0) + shift, (3, 4, 5), align_corners), align_corners, order
    )
    x_channel = 2 if order == "ij" else 0
    torch.testing.assert_close(flow[:, x_channel], torch.ones(1, 3, 4, 5), atol=1e-5, rtol=0)
    assert flow[:, [c for c in range(3) if c != x_channel]].abs().max() < 1e-5


def test_bad_options_are_named():
    with pytest.raises(torchstn.OptionError, match="dst_to_src"):
        coords.matrix_to_pixel(torch.eye(2, 3)[None], (4, 4), (4, 4), direction="forward")
    with pytest.raises(torchstn.OptionError, match="Did you mean 'xy'"):
        coords.grid_to_displacement(coords.identity_grid((3, 3)), order="yx")


def test_a_size_one_axis_with_align_corners_has_no_pixel_frame():
    eye = coords.pixel_from_normalised((1, 4)) @ coords.normalised_from_pixel((1, 4))  # align_corners=False: fine
    torch.testing.assert_close(eye, torch.eye(3, dtype=torch.float64))
    with pytest.raises(torchstn.ShapeError, match="size 1 with align_corners=True"):
        coords.pixel_from_normalised((1, 4), align_corners=True)


def test_pixel_converters_take_the_numpy_matrix_opencv_returns():
    np = pytest.importorskip("numpy")
    # what cv2.getRotationMatrix2D((30, 20), 25, 0.9) returns: a src->dst (2, 3) float64 array
    angle, scale = np.deg2rad(25.0), 0.9
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    cv = np.array([[a, b, (1 - a) * 30 - b * 20], [-b, a, b * 30 + (1 - a) * 20]])
    theta = coords.matrix_from_pixel(cv.astype(np.float32), (40, 60), (40, 60), direction="src_to_dst")
    assert isinstance(theta, torch.Tensor) and theta.shape == (2, 3) and theta.dtype == torch.float32
    expected = coords.matrix_from_pixel(torch.from_numpy(cv)[None], (40, 60), (40, 60), direction="src_to_dst")[0]
    torch.testing.assert_close(theta, expected.float())
    back = coords.matrix_to_pixel(theta.numpy(), (40, 60), (40, 60), direction="src_to_dst")
    torch.testing.assert_close(back, torch.from_numpy(cv).float(), atol=1e-4, rtol=0)


def test_pixel_converters_check_the_matrix_shape_and_keep_integers_from_truncating():
    with pytest.raises(torchstn.ShapeError, match=r"matrix must be .*got shape \(2, 2\)"):
        coords.matrix_from_pixel(torch.eye(2), (4, 4), (4, 4))
    with pytest.raises(torchstn.ShapeError, match="in_size must be 3"):
        coords.matrix_to_pixel(torch.eye(3, 4), (4, 4), (4, 4))  # a 3D matrix with 2D sizes
    shift = coords.matrix_from_pixel([[1, 0, 1], [0, 1, 0]], (4, 8), (4, 8))  # an integer pixel shift
    torch.testing.assert_close(shift, torch.tensor([[1.0, 0.0, 0.25], [0.0, 1.0, 0.0]]))


def test_to_homogeneous_names_a_numpy_matrix():
    np = pytest.importorskip("numpy")
    with pytest.raises(torchstn.DTypeError, match="matrix must be a torch.Tensor, got ndarray"):
        coords.to_homogeneous(np.eye(2, 3))
