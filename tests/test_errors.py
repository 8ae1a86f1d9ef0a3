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
    with pytest.raises(torchstn.OptionError, match="unknown keyword 'gridsize'.*Did you mean 'grid_size'"):
        torchstn.get_transform("tps", gridsize=3)
    with pytest.raises(torchstn.OptionError, match="grid_size"):
        torchstn.get_transform("tps", grid_size=1)


def test_non_finite_theta_raises_by_default():
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine")
    with torch.no_grad():
        st.head.linear.bias[0] = float("nan")
    with pytest.raises(torchstn.NonFiniteError, match="theta holds 2 non-finite.*localisation network diverged"):
        st(torch.rand(2, 1, 4, 4))
    with pytest.raises(torchstn.NonFiniteError):
        torchstn.get_transform("affine").check_theta(torch.full((1, 6), float("inf")))


def test_fill_value_shape():
    with pytest.raises(torchstn.ShapeError, match="fill_value"):
        torchstn.sample(torch.rand(1, 3, 2, 2), identity_grid((2, 2)), padding_mode="fill", fill_value=torch.zeros(2))


def test_errors_subclass_builtins():
    assert issubclass(torchstn.ShapeError, ValueError) and issubclass(torchstn.DTypeError, TypeError)
    assert issubclass(torchstn.OptionError, ValueError) and issubclass(torchstn.NonFiniteError, ValueError)


def test_every_error_class_is_at_the_top_level():
    from torchstn import errors

    assert set(errors.__all__) <= set(torchstn.__all__)
    assert torchstn.ExportError is errors.ExportError


# -- issue 14: honest errors in the library API ------------------------------------------------------------------
def test_unknown_transform_option_lists_the_real_options():
    with pytest.raises(torchstn.OptionError, match=r"'grid_size' for transform 'affine' \(it takes no options\)") as e:
        torchstn.get_transform("affine", grid_size=3)
    assert "args" not in str(e.value)


def test_mistyped_spatial_transformer_keyword_is_named_with_a_suggestion():
    loc = torchstn.fc_localisation(16)
    with pytest.raises(
        torchstn.OptionError, match="unknown keyword 'paddingmode' for SpatialTransformer.*Did you mean 'padding_mode'"
    ):
        torchstn.SpatialTransformer(loc, "affine", paddingmode="border")
    with pytest.raises(torchstn.OptionError, match="Did you mean 'grid_size'"):
        torchstn.SpatialTransformer(loc, "tps", gridsize=3)
    with pytest.raises(torchstn.OptionError, match="Did you mean 'align_corners'"):
        torchstn.SpatialTransformer(loc, torchstn.get_transform("affine"), align_corner=True)


def test_non_finite_input_is_blamed_instead_of_the_network():
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine")
    x = torch.rand(2, 1, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(torchstn.NonFiniteError, match="localisation input holds 1 non-finite value") as e:
        st(x)
    assert "diverged" not in str(e.value)
    with pytest.raises(torchstn.NonFiniteError, match="localisation input holds 1 non-finite value"):
        st(torch.rand(2, 1, 4, 4), x)  # the NaN is in loc_input


@pytest.mark.parametrize(
    "build, x, match",
    [
        (
            lambda: torchstn.conv_localisation(3, (64, 64), channels=2, fc=4),
            torch.rand(2, 3, 48, 80),
            r"built for inputs \(3, 64, 64\).*got \(3, 48, 80\)",
        ),
        (
            lambda: torchstn.conv_localisation(3, (64, 64), channels=2, fc=4),
            torch.rand(2, 1, 64, 64),
            r"built for inputs \(3, 64, 64\).*got \(1, 64, 64\)",
        ),
        (
            lambda: torchstn.fc_localisation(100),
            torch.rand(2, 3, 8, 8),
            r"fc_localisation\(100\) was built for 100 input",
        ),
    ],
    ids=["conv-size", "conv-channels", "fc-features"],
)
def test_localisation_size_mismatch_names_what_the_net_was_built_for(build, x, match):
    st = torchstn.SpatialTransformer(build(), "affine")
    with pytest.raises(torchstn.ShapeError, match=match):
        st(x)


def test_wrong_in_features_is_named_by_the_head():
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine", in_features=10)
    with pytest.raises(torchstn.ShapeError, match=r"head expects 10 localisation features, got 32.*in_features=32"):
        st(torch.rand(2, 1, 4, 4))
    with pytest.raises(torchstn.OptionError, match="in_features must be a positive int"):
        torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine", in_features=10.5)


def test_error_inside_a_user_localisation_net_keeps_its_text_and_gains_the_input_shape():
    loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    st = torchstn.SpatialTransformer(loc, "affine", in_features=5)
    with pytest.raises(RuntimeError, match="mat1 and mat2") as e:
        st(torch.rand(2, 1, 5, 5))
    if hasattr(e.value, "add_note"):  # Python >= 3.11
        assert "localisation network of SpatialTransformer on an input of shape (2, 1, 5, 5)" in e.value.__notes__[0]


def test_loc_input_is_checked_at_the_boundary():
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine")
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(torchstn.DTypeError, match="loc_input must be a torch.Tensor, got bool"):
        st(x, True)
    with pytest.raises(torchstn.DTypeError, match="loc_input must be a floating-point"):
        st(x, torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(torchstn.ShapeError, match=r"loc_input .*batch 2\), got shape \(3, 1, 4, 4\)"):
        st(x, torch.rand(3, 1, 4, 4))


def test_the_module_checks_its_input_once_and_still_names_it():
    """forward and warp check U themselves and hand the sampler checked values (sample_unchecked): a bad U is still
    named "input", and a grid that lost the batch (a localisation net's fault) is still caught."""
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(16), "affine")
    theta = st.family.identity().expand(2, -1)
    for call in (lambda U: st(U), lambda U: st.warp(U, theta)):
        with pytest.raises(torchstn.DTypeError, match="input must be a floating-point tensor"):
            call(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
        with pytest.raises(torchstn.DTypeError, match="input must be a torch.Tensor, got list"):
            call([[0.0]])
        with pytest.raises(torchstn.ShapeError, match="transform 'affine' works on 4-D inputs, got shape"):
            call(torch.rand(2, 1, 4, 4, 4))
    with pytest.raises(torchstn.ShapeError, match=r"theta for transform 'affine' must be \(B, 6\)"):
        st.warp(torch.rand(2, 1, 4, 4), torch.zeros(2, 5))

    class LosesTheBatch(torch.nn.Module):
        def forward(self, x):
            return torch.cat((x, x[:1])).flatten(1)  # one sample too many

    lost = torchstn.SpatialTransformer(LosesTheBatch(), "affine", in_features=16)
    with pytest.raises(torchstn.ShapeError, match="grid batch size 3 does not match input batch size 2"):
        lost(torch.rand(2, 1, 4, 4))


def test_sample_unchecked_is_sample_on_checked_arguments():
    from torchstn.functional.sample import sample_unchecked

    torch.manual_seed(0)
    x, grid = torch.rand(2, 3, 5, 6), torch.rand(1, 4, 7, 2) * 2.4 - 1.2  # a batch-1 grid is broadcast
    for options in (
        {"mode": "bilinear", "padding_mode": "zeros"},
        {"mode": "nearest", "padding_mode": "border"},
        {"mode": "bicubic", "padding_mode": "fill", "fill_value": 0.5},
        {"mode": "bilinear", "padding_mode": "reflection", "deterministic": True},
        {"mode": "bilinear", "padding_mode": "zeros", "antialias": True},
    ):
        full = {
            "fill_value": 0.0,
            "align_corners": False,
            "antialias": False,
            "jacobian": None,
            "deterministic": None,
            **options,
        }
        torch.testing.assert_close(sample_unchecked(x, grid, **full), torchstn.sample(x, grid, **options))
    with pytest.raises(torchstn.ShapeError, match="grid batch size 3"):
        sample_unchecked(x, grid.expand(3, -1, -1, -1), **full)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((None, "affine"), {}, "localisation must be a torch.nn.Module"),
        ((), {"transform": "affine3d", "mode": "bicubic"}, "bicubic.*2D only"),
        ((), {"align_corners": "yes"}, "align_corners must be True or False"),
        ((), {"antialias": 1}, "antialias must be True or False"),
        ((), {"fill_value": 0.5}, "fill_value=0.5 is only used with padding_mode='fill'"),
        ((), {"padding_mode": "fill", "fill_value": "white"}, "fill_value must be a number"),
        ((), {"padding_mode": "fill", "fill_value": None}, "fill_value must be a number"),
        ((), {"padding_mode": "fill", "fill_value": torch.zeros(2, 2)}, "fill_value must be"),
    ],
    ids=[
        "no-localisation",
        "bicubic-3d",
        "align-corners-str",
        "antialias-int",
        "fill-without-fill-padding",
        "fill-str",
        "fill-none",
        "fill-2d-tensor",
    ],
)
def test_construction_refuses_settings_that_would_fail_or_be_ignored_later(args, kwargs, match):
    args = args or (torchstn.fc_localisation(16),)
    with pytest.raises(torchstn.OptionError, match=match):
        torchstn.SpatialTransformer(*args, **kwargs)


def test_construction_accepts_the_fill_forms():
    loc = torchstn.fc_localisation(16 * 3)
    x = torch.rand(2, 3, 4, 4)
    for fill in (0.5, 1, (0.1, 0.2, 0.3), torch.tensor([0.1, 0.2, 0.3]), torch.tensor(0.5)):
        assert torchstn.SpatialTransformer(loc, padding_mode="fill", fill_value=fill)(x).shape == x.shape
    torchstn.SpatialTransformer(loc, fill_value=0)  # the default value with any padding


def test_sample_refuses_the_same_settings():
    x, grid = torch.rand(1, 1, 2, 2), identity_grid((2, 2))
    with pytest.raises(torchstn.OptionError, match="fill_value must be a number"):
        torchstn.sample(x, grid, padding_mode="fill", fill_value="white")
    with pytest.raises(torchstn.OptionError, match="fill_value must be a number"):
        torchstn.sample(x, grid, padding_mode="fill", fill_value=None)
    with pytest.raises(torchstn.OptionError, match="align_corners must be True or False"):
        torchstn.sample(x, grid, align_corners="yes")
