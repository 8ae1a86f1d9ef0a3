"""ICSTN, the IC-STN paper's perturbed MNIST: the draws, the corner geometry, the public code's pixel convention,
the fixed test set and the errors."""

from __future__ import annotations

import pytest
import torch

from torchstn.data import DistortedMNIST
from torchstn.data.distortions import DISTORTIONS, CornerPerturbation, get_distortion
from torchstn.data.distortions.icstn import CORNERS, homography_through
from torchstn.data.synthetic import synthetic_digits
from torchstn.errors import OptionError
from torchstn.functional import transform_points_projective

F64 = torch.float64


def test_registered_under_its_name():
    assert DISTORTIONS["icstn"] is CornerPerturbation
    assert get_distortion("ICSTN", sigma=0.1).options() == {"sigma": 0.1, "translation": 0.25}


def test_draws_are_independent_corner_moves_plus_one_shared_translation():
    d = CornerPerturbation()
    params = d.sample_params(torch.Generator().manual_seed(0), 40_000)
    moves = d.moved_corners(params) - torch.tensor(CORNERS, dtype=F64)  # (n, 4, 2)
    x = moves[..., 0]  # (n, 4)
    assert abs(float(x.mean())) < 0.01
    assert float(x.std()) == pytest.approx((0.25**2 + 0.25**2) ** 0.5, rel=0.02)
    corr = torch.corrcoef(x.T)  # two corners share the translation: correlation 0.25^2 / (2 * 0.25^2) = 0.5
    assert float(corr[0, 1]) == pytest.approx(0.5, abs=0.02)
    x_y = torch.corrcoef(torch.stack((moves[:, 0, 0], moves[:, 0, 1])))
    assert abs(float(x_y[0, 1])) < 0.02  # x and y moves independent


def test_each_output_corner_reads_its_moved_corner():
    d = CornerPerturbation()
    params = d.sample_params(torch.Generator().manual_seed(1), 8)
    scale = 27 / 28
    corners = torch.tensor(CORNERS, dtype=F64).expand(8, 4, 2) * scale
    got = transform_points_projective(d.matrix(params), corners)
    torch.testing.assert_close(got, d.moved_corners(params) * scale)


def test_a_shared_move_of_two_public_units_over_27_is_one_pixel():
    """The public code's +-1 are the corner pixels' centres: 2 units span 27 pixels."""
    d = CornerPerturbation(sigma=0.0)
    x = synthetic_digits(2, seed=0)[0].float().div(255).unsqueeze(1)
    params = {"corner_shift": torch.zeros(2, 4, 2, dtype=F64), "translation": torch.tensor([[2 / 27, 0.0]] * 2)}
    out = d.apply(x, params, compute_dtype=F64)
    torch.testing.assert_close(out[..., :27], x[..., 1:], atol=1e-6, rtol=0)  # reads one pixel to the right
    zero = {"corner_shift": torch.zeros(2, 4, 2, dtype=F64), "translation": torch.zeros(2, 2, dtype=F64)}
    torch.testing.assert_close(d.apply(x, zero, compute_dtype=F64), x, atol=1e-6, rtol=0)


def test_homography_through_maps_the_points():
    g = torch.Generator().manual_seed(2)
    src = torch.tensor([CORNERS], dtype=F64).expand(5, 4, 2)
    dst = src + 0.2 * torch.randn(5, 4, 2, generator=g, dtype=F64)
    torch.testing.assert_close(transform_points_projective(homography_through(src, dst), src), dst)


def test_fixed_test_set_does_not_depend_on_the_seed():
    source = synthetic_digits(32, seed=0)
    a = DistortedMNIST("ICSTN", split="test", source=source, seed=0)
    b = DistortedMNIST("icstn", split="test", source=source, seed=9)
    index = torch.arange(32)
    assert torch.equal(a.batch(index)[0], b.batch(index)[0])
    train = DistortedMNIST("ICSTN", source=source)
    assert not torch.equal(train.batch(index)[0], train.batch(index)[0])  # redrawn each call


@pytest.mark.parametrize("bad", [dict(sigma=-0.1), dict(translation=float("nan"))])
def test_bad_options(bad):
    with pytest.raises(OptionError, match="must be a finite number >= 0"):
        CornerPerturbation(**bad)
