"""Every bad input gets a clear error that subclasses ValueError/TypeError and says what was expected and got."""

from __future__ import annotations

import pytest
import torch

import torchstn
from torchstn.coords import identity_grid


def test_wrong_theta_width():
    with pytest.raises(torchstn.ShapeError, match=r"\(B, 6\), got \(2, 5\)"):
        torchstn.get_transform("affine").grid(torch.zeros(2, 5), (4, 4))
    with pytest.raises(ValueError, match=r"\(B, 32\)"):
        torchstn.get_transform("tps").grid(torch.zeros(2, 18), (4, 4))


def test_wrong_ranks():
    with pytest.raises(torchstn.ShapeError, match="4-D or 5-D"):
        torchstn.sample(torch.rand(3, 4, 4), identity_grid((4, 4)))
    with pytest.raises(torchstn.ShapeError, match=r"\(B, H', W', 2\)"):
        torchstn.sample(torch.rand(1, 1, 4, 4), identity_grid((2, 4, 4)))
    with pytest.raises(torchstn.ShapeError, match=r"\(B, 6\)"):
        torchstn.get_transform("affine").grid(torch.zeros(6), (4, 4))


def test_batch_mismatch():
    with pytest.raises(torchstn.ShapeError, match="batch size 2 does not match input batch size 3"):
        torchstn.sample(torch.rand(3, 1, 4, 4), identity_grid((4, 4)).expand(2, -1, -1, -1))


def test_integer_dtypes():
    with pytest.raises(torchstn.DTypeError, match="floating-point"):
        torchstn.sample(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), identity_grid((4, 4)))
    with pytest.raises(TypeError, match="theta must be a floating-point"):
        torchstn.get_transform("affine").grid(torch.zeros(1, 6, dtype=torch.long), (4, 4))
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine")
    with pytest.raises(TypeError, match="input must be a floating-point"):
        st(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize("size", [(0, 4), (4, -1), (4,), (4.0, 4), 0])
def test_zero_negative_or_malformed_out_size(size):
    with pytest.raises(torchstn.ShapeError, match="out_size"):
        torchstn.get_transform("affine").grid(torch.zeros(1, 6), size)
    with pytest.raises(ValueError, match="out_size"):
        torchstn.SpatialTransformer(torchstn.fc_localisation(16), out_size=size)


def test_family_at_a_rank_it_does_not_support():
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(64), "affine")
    with pytest.raises(torchstn.ShapeError, match="affine3d"):
        st(torch.rand(1, 1, 4, 4, 4))
    st3 = torchstn.SpatialTransformer(torchstn.fc_localisation(64), "affine3d")
    with pytest.raises(torchstn.ShapeError, match="5-D"):
        st3(torch.rand(1, 1, 8, 8))
    with pytest.raises(torchstn.OptionError, match="bicubic"):
        torchstn.sample(torch.rand(1, 1, 2, 2, 2), identity_grid((2, 2, 2)), mode="bicubic")


def test_unknown_option_strings_suggest_the_meant_one():
    with pytest.raises(torchstn.OptionError, match="Did you mean 'affine'"):
        torchstn.get_transform("afine")
    with pytest.raises(torchstn.OptionError, match="Did you mean 'bilinear'"):
        torchstn.sample(torch.rand(1, 1, 2, 2), identity_grid((2, 2)), mode="bilinar")
    with pytest.raises(torchstn.OptionError, match="Did you mean 'reflection'"):
        torchstn.SpatialTransformer(torchstn.fc_localisation(4), padding_mode="reflect")
    with pytest.raises(torchstn.OptionError, match="unknown \\['gridsize'\\]"):
        torchstn.get_transform("tps", gridsize=3)
    with pytest.raises(torchstn.OptionError, match="grid_size"):
        torchstn.get_transform("tps", grid_size=1)


def test_non_finite_theta_raises_by_default():
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine")
    with torch.no_grad():
        st.head.linear.bias[0] = float("nan")
    with pytest.raises(torchstn.NonFiniteError, match="theta holds 2 non-finite"):
        st(torch.rand(2, 1, 4, 4))
    with pytest.raises(torchstn.NonFiniteError):
        torchstn.get_transform("affine").check_theta(torch.full((1, 6), float("inf")))


def test_fill_value_shape():
    with pytest.raises(torchstn.ShapeError, match="fill_value"):
        torchstn.sample(torch.rand(1, 3, 2, 2), identity_grid((2, 2)), padding_mode="fill", fill_value=torch.zeros(2))


def test_errors_subclass_builtins():
    assert issubclass(torchstn.ShapeError, ValueError) and issubclass(torchstn.DTypeError, TypeError)
    assert issubclass(torchstn.OptionError, ValueError) and issubclass(torchstn.NonFiniteError, ValueError)
