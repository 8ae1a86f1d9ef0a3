"""Composition, inversion and mapping of points and boxes between output and input frames."""

from __future__ import annotations

import pytest
import torch

import torchstn


def test_compose_matches_warping_twice():
    torch.manual_seed(0)
    U = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    first = torch.tensor([[[0.9, 0.1, 0.05], [-0.1, 0.9, 0.0]]], dtype=torch.float64).expand(2, -1, -1)
    second = torch.tensor([[[0.8, 0.0, -0.1], [0.0, 0.8, 0.1]]], dtype=torch.float64).expand(2, -1, -1)
    both = torchstn.compose_affine(first, second)
    # sample the composite directly and as two steps on a smooth image (bilinear twice blurs slightly)
    x = torch.linspace(-1, 1, 32, dtype=torch.float64)
    U = (torch.sin(3 * x)[None, :] * torch.cos(2 * x)[:, None]).expand(2, 1, 32, 32)
    once = torchstn.sample(U, torchstn.affine_grid(both, (32, 32)))
    twice = torchstn.sample(
        torchstn.sample(U, torchstn.affine_grid(first, (32, 32))), torchstn.affine_grid(second, (32, 32))
    )
    inner = (slice(None), slice(None), slice(6, 26), slice(6, 26))
    assert (once[inner] - twice[inner]).abs().max() < 0.02


def _apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points (B, N, n) through an affine (B, n, n+1) or projective (B, n+1, n+1) matrix, dividing by w."""
    n = points.shape[-1]
    hom = torch.cat((points, torch.ones_like(points[..., :1])), -1) @ matrix.transpose(-1, -2)
    return hom[..., :n] / hom[..., n:] if matrix.shape[-2] == n + 1 else hom


def _random_matrix(n: int, projective: bool, batch: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.eye(n + 1, dtype=torch.float64) + 0.3 * torch.randn(
        batch, n + 1, n + 1, generator=gen, dtype=torch.float64
    )
    if projective:
        m[:, n, :n] *= 0.5  # a mild perspective: w stays away from the horizon on [-1, 1]^n
        m[:, n, n] = 1.0
        return m
    return m[:, :n]


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize(
    "first_projective, second_projective", [(False, False), (False, True), (True, False), (True, True)]
)
def test_compose_maps_points_like_first_after_second(n, first_projective, second_projective):
    gen = torch.Generator().manual_seed(n)
    first = _random_matrix(n, first_projective, 4, gen)
    second = _random_matrix(n, second_projective, 4, gen)
    both = torchstn.compose_affine(first, second)
    projective = first_projective or second_projective
    assert both.shape == ((4, n + 1, n + 1) if projective else (4, n, n + 1))  # affine then projective: was (4, n, n+1)
    pts = torch.rand(4, 20, n, generator=gen, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(_apply(both, pts), _apply(first, _apply(second, pts)), atol=1e-12, rtol=1e-12)
    shared = torchstn.compose_affine(first[:1], second)  # a batch of 1 broadcasts
    torch.testing.assert_close(_apply(shared, pts), _apply(first[:1].expand_as(first), _apply(second, pts)))


def test_compose_refuses_mixed_ranks_and_non_matrices():
    with pytest.raises(torchstn.ShapeError, match="2D map with a 3D"):
        torchstn.compose_affine(torch.eye(2, 3)[None], torch.eye(3, 4)[None])
    with pytest.raises(torchstn.ShapeError, match="projective"):
        torchstn.compose_affine(torch.eye(2, 4)[None], torch.eye(2, 3)[None])
    with pytest.raises(torchstn.ShapeError, match="projective"):
        torchstn.invert_affine(torch.eye(3, 5)[None])


def test_invert_round_trip_affine_and_projective():
    A = torch.eye(2, 3) + 0.2 * torch.randn(3, 2, 3)
    torch.testing.assert_close(
        torchstn.compose_affine(A, torchstn.invert_affine(A)), torch.eye(2, 3).expand(3, -1, -1), atol=1e-5, rtol=0
    )
    H = torch.eye(3) + 0.05 * torch.randn(3, 3, 3)
    torch.testing.assert_close(
        torchstn.compose_affine(H, torchstn.invert_affine(H)), torch.eye(3).expand(3, -1, -1), atol=1e-5, rtol=0
    )
    half = torchstn.invert_affine(A.half())
    assert half.dtype == torch.float16


@pytest.mark.parametrize("name", ["affine", "attention", "similarity", "translation", "projective"])
def test_points_round_trip_between_frames(name):
    torch.manual_seed(1)
    fam = torchstn.get_transform(name)
    theta = fam.identity().expand(2, -1) + 0.1 * torch.randn(2, fam.num_params)
    pts = torch.rand(2, 5, 2) - 0.5
    there = torchstn.transform_points(name, theta, pts, "output_to_input")
    back = torchstn.transform_points(name, theta, there, "input_to_output")
    torch.testing.assert_close(back, pts, atol=1e-5, rtol=0)


def test_tps_has_no_inverse():
    fam = torchstn.get_transform("tps")
    with pytest.raises(torchstn.OptionError, match="no closed-form inverse"):
        torchstn.transform_points("tps", fam.identity()[None], torch.zeros(1, 1, 2), "input_to_output")
    with pytest.raises(torchstn.OptionError, match="'tps' has no matrix form"):
        fam.matrix(fam.identity()[None])


def test_box_of_the_attention_window():
    theta = torch.tensor([[0.25, 0.5, -0.5]])
    box = torchstn.transform_boxes("attention", theta, torch.tensor([[[-1.0, -1.0, 1.0, 1.0]]]))
    torch.testing.assert_close(box, torch.tensor([[[0.25, -0.75, 0.75, -0.25]]]))
    back = torchstn.transform_boxes("attention", theta, box, "input_to_output")
    torch.testing.assert_close(back, torch.tensor([[[-1.0, -1.0, 1.0, 1.0]]]))
