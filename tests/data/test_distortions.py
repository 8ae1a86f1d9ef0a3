"""Tests for torchstn.data.distortions: seeded params, parameter ranges, identities, geometry, clutter, 3D, errors.

No real MNIST needed: the digits are synthetic seven-segment glyphs or hand-made tensors.
"""

from __future__ import annotations

import math

import pytest
import torch

from torchstn.data.distortions import (
    DISTORTIONS,
    Elastic,
    Extrude3D,
    Plain,
    ProjectiveJitter,
    Rotate,
    RotateTranslateScale,
    TranslateClutter,
    canonical_variant,
    get_distortion,
    select_params,
    sin_cos,
)
from torchstn.data.distortions.registry import register_distortion
from torchstn.data.synthetic import synthetic_digits
from torchstn.errors import DataError, DTypeError, OptionError, ShapeError
from torchstn.functional import transform_points_projective

F64 = torch.float64


def _digits(n: int = 16, seed: int = 0) -> torch.Tensor:
    images, _ = synthetic_digits(n, seed)
    return images.float().div(255.0).unsqueeze(1)  # (n, 1, 28, 28)


def _pool() -> torch.Tensor:
    return synthetic_digits(32, seed=5)[0]


def _make(name: str):
    return TranslateClutter(pool=_pool()) if name == "TC" else get_distortion(name)


ALL = [*DISTORTIONS, "3D"]


def _make_any(name: str):
    return Extrude3D(canvas=24, depth=4) if name == "3D" else _make(name)


# ---------------------------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_bytes_different_seed_differs(name):
    d, x = _make_any(name), _digits(8)
    a = d(x, torch.Generator().manual_seed(3))
    b = d(x, torch.Generator().manual_seed(3))
    c = d(x, torch.Generator().manual_seed(4))
    assert a.shape == (8, *d.image_shape) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert name == "plain" or not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_params_are_float64_cpu_and_selectable(name):
    d = _make_any(name)
    params = d.sample_params(torch.Generator().manual_seed(0), 5)
    for key, value in params.items():
        assert value.shape[0] == 5, key
        assert value.dtype in (F64, torch.int64), key
    part = select_params(params, torch.tensor([1, 3]))
    x = _digits(5)
    assert torch.equal(d.apply(x, params)[[1, 3]], d.apply(x[[1, 3]], part))  # per-sample, batch independent


def test_float64_compute_is_batch_independent_and_close_to_float32():
    d, x = RotateTranslateScale(), _digits(12)
    params = d.sample_params(torch.Generator().manual_seed(1), 12)
    full = d.apply(x, params, compute_dtype=F64)
    one_by_one = torch.cat([d.apply(x[i : i + 1], select_params(params, [i]), compute_dtype=F64) for i in range(12)])
    assert full.dtype == torch.float32 and torch.equal(full, one_by_one)
    assert torch.allclose(full, d.apply(x, params), atol=1e-5)


def test_sin_cos_matches_math():
    angle = torch.linspace(-math.pi, math.pi, 1001, dtype=F64)
    s, c = sin_cos(angle)
    assert torch.allclose(s, torch.sin(angle), atol=1e-15, rtol=0)
    assert torch.allclose(c, torch.cos(angle), atol=1e-15, rtol=0)


# ---------------------------------------------------------------------------------------------- ranges

N = 20_000


def test_rotation_ranges():
    p = Rotate().sample_params(torch.Generator().manual_seed(0), N)
    assert float(p["angle"].abs().max()) <= 90.0 and float(p["angle"].abs().max()) > 89.0
    assert torch.all(p["scale"] == 1.0) and torch.all(p["centre"] == 13.5)
    p42 = Rotate(canvas=42).sample_params(torch.Generator().manual_seed(0), 10)
    assert torch.all(p42["centre"] == 20.5)


def test_rts_ranges_and_box_placement():
    rts = RotateTranslateScale()
    p = rts.sample_params(torch.Generator().manual_seed(0), N)
    angle, scale, centre = p["angle"], p["scale"], p["centre"]
    assert float(angle.abs().max()) <= 45.0 and float(angle.abs().max()) > 44.9
    assert float(scale.min()) >= 0.7 and float(scale.max()) <= 1.2
    assert abs(float(angle.mean())) < 1.0 and abs(float(scale.mean()) - 0.95) < 0.01
    half = 14.0 * scale.unsqueeze(1)  # the scaled 28x28 box stays on the 42x42 canvas
    assert torch.all(centre - half >= -0.5 - 1e-9) and torch.all(centre + half <= 41.5 + 1e-9)
    anywhere = RotateTranslateScale(placement="anywhere").sample_params(torch.Generator().manual_seed(0), N)
    c = anywhere["centre"]
    assert float(c.min()) >= -0.5 and float(c.max()) <= 41.5 and float(c.min()) < 1.0 and float(c.max()) > 40.0


def test_projective_ranges_and_noise_std():
    p = ProjectiveJitter(recipe="ours", convex_only=False).sample_params(torch.Generator().manual_seed(0), N)
    assert float(p["scale"].min()) >= 0.75 and float(p["scale"].max()) <= 1.0
    shift = p["corner_shift"]
    assert shift.shape == (N, 4, 2)
    assert abs(float(shift.std()) - 5.0) < 0.1 and abs(float(shift.mean())) < 0.1


def test_projective_convex_only_redraws_folded_quads():
    from torchstn.data.distortions.projective import _is_convex

    raw = ProjectiveJitter(recipe="ours", convex_only=False)
    folded = ~_is_convex(raw.moved_corners(raw.sample_params(torch.Generator().manual_seed(0), N)))
    assert 0.005 < float(folded.double().mean()) < 0.03
    pj = ProjectiveJitter(recipe="ours")
    p = pj.sample_params(torch.Generator().manual_seed(0), N)
    assert bool(_is_convex(pj.moved_corners(p)).all())
    assert abs(float(p["corner_shift"].std()) - 5.0) < 0.3


def test_elastic_noise_std():
    p = Elastic().sample_params(torch.Generator().manual_seed(0), N)
    assert p["shift"].shape == (N, 16, 2)
    assert abs(float(p["shift"].std()) - 2.0) < 0.03  # the evidence's spread (docs/datasets.md, "The E recipe")
    assert abs(float(Elastic(sigma=1.5).sample_params(torch.Generator().manual_seed(0), N)["shift"].std()) - 1.5) < 0.02


def test_elastic_zoom_recipe_draws_the_scale_first_and_leaves_plain_draws_unchanged():
    g = torch.Generator
    plain, zoom = (
        Elastic().sample_params(g().manual_seed(3), 500),
        Elastic(recipe="zoom").sample_params(g().manual_seed(3), 500),
    )
    assert list(plain) == ["shift"] and list(zoom) == ["scale", "shift"]
    assert 0.75 <= float(zoom["scale"].min()) and float(zoom["scale"].max()) < 1.0
    expected_shift = g().manual_seed(3)
    torch.rand(500, generator=expected_shift, dtype=F64)  # the scale's draw, then the shifts as plain draws them
    assert torch.equal(zoom["shift"], torch.randn((500, 16, 2), generator=expected_shift, dtype=F64) * 2.0)
    with pytest.raises(OptionError, match="Did you mean 'zoom'"):
        Elastic(recipe="zom")


def test_elastic_zoom_without_jitter_is_ps_zoom_out():
    """The spline through control points at lattice/scale is an exact similarity: P's zoom with unmoved corners."""
    x, s = _digits(3), torch.tensor([0.75, 0.9, 1.0], dtype=F64)
    e = Elastic(recipe="zoom").apply(x, {"scale": s, "shift": torch.zeros(3, 16, 2, dtype=F64)})
    p = ProjectiveJitter().apply(x, {"scale": s, "corner_shift": torch.zeros(3, 4, 2, dtype=F64)})
    assert torch.allclose(e, p, atol=1e-4) and not torch.allclose(e[0], x[0], atol=1e-2)


def test_tc_positions_are_integer_and_inside():
    tc = TranslateClutter(pool=_pool())
    p = tc.sample_params(torch.Generator().manual_seed(0), 2000)
    top_left = p["centre"] - 13.5
    assert torch.equal(top_left, top_left.round())
    assert float(top_left.min()) == 0.0 and float(top_left.max()) == 32.0
    assert p["clutter_index"].shape == (2000, 6) and int(p["clutter_index"].max()) < 32
    assert int(p["clutter_crop"].min()) >= 0 and int(p["clutter_crop"].max()) == 22
    assert int(p["clutter_position"].min()) >= 0 and int(p["clutter_position"].max()) == 54


def test_tc_excludes_own_digit():
    tc = TranslateClutter(pool=_pool(), n_clutter=50)
    own = torch.arange(32)
    p = tc.sample_params(torch.Generator().manual_seed(0), 32, exclude=own)
    assert not torch.any(p["clutter_index"] == own.unsqueeze(1))
    assert set(p["clutter_index"].flatten().tolist()) == set(range(32))


def test_3d_ranges():
    vol = Extrude3D()
    p = vol.sample_params(torch.Generator().manual_seed(0), 5000)
    assert float(p["angle"].abs().max()) <= 30.0 and p["angle"].shape == (5000, 3)
    half = torch.tensor([14.0, 14.0, 7.0], dtype=F64)
    assert torch.all(p["centre"] - half >= -0.5) and torch.all(p["centre"] + half <= 59.5)
    assert torch.all(Extrude3D(rotate=False).sample_params(None, 3)["angle"] == 0)


# ---------------------------------------------------------------------------------------------- identities


def _rts_params(angle=0.0, scale=1.0, centre=(13.5, 13.5), n=1):
    return {
        "angle": torch.full((n,), angle, dtype=F64),
        "scale": torch.full((n,), scale, dtype=F64),
        "centre": torch.tensor([centre], dtype=F64).expand(n, 2),
    }


def test_identity_parameters_give_the_digit_back():
    x = _digits(3)
    assert torch.allclose(RotateTranslateScale(canvas=28).apply(x, _rts_params(n=3)), x, atol=1e-5)
    assert torch.allclose(Rotate().apply(x, _rts_params(n=3)), x, atol=1e-5)
    p = {"scale": torch.ones(3, dtype=F64), "corner_shift": torch.zeros(3, 4, 2, dtype=F64)}
    assert torch.allclose(ProjectiveJitter().apply(x, p), x, atol=1e-5)
    assert torch.allclose(Elastic().apply(x, {"shift": torch.zeros(3, 16, 2, dtype=F64)}), x, atol=1e-5)
    assert torch.equal(Plain().apply(x, {}), x)


def test_rts_places_the_digit_where_expected():
    x = _digits(2)
    out = RotateTranslateScale().apply(x, _rts_params(centre=(13.5 + 5, 13.5 + 11), n=2), compute_dtype=F64)
    assert torch.allclose(out[:, :, 11:39, 5:33], x, atol=1e-6)
    assert float(out.sum()) == pytest.approx(float(x.sum()), rel=1e-6)


def test_rotation_direction_is_counter_clockwise_as_displayed():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 13, 20] = 1.0  # right of the centre (13.5, 13.5)
    out = Rotate().apply(x, _rts_params(angle=90.0), compute_dtype=F64)
    assert float(out[0, 0, 7, 13]) == pytest.approx(1.0, abs=1e-9)  # now above the centre
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-9)


def test_scale_scales_the_mass():
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((xx - 13.5) ** 2 + (yy - 13.5) ** 2) / 18.0).view(1, 1, 28, 28)
    out = RotateTranslateScale().apply(blob, _rts_params(scale=1.2, centre=(20.5, 20.5)))
    assert float(out.sum()) / float(blob.sum()) == pytest.approx(1.44, rel=0.02)


def test_projective_homography_maps_moved_corners_to_image_corners():
    pj = ProjectiveJitter()
    p = pj.sample_params(torch.Generator().manual_seed(2), 6)
    corners = torch.tensor(pj.CORNERS, dtype=F64).expand(6, 4, 2)
    moved = p["scale"].view(6, 1, 1) * corners + p["corner_shift"] * (2.0 / 28)
    back = transform_points_projective(pj.matrix(p), moved)
    assert torch.allclose(back, corners, atol=1e-9)


def test_tc_places_digit_exactly_and_clutter_is_6x6_crops():
    x = _digits(2)
    tc = TranslateClutter(pool=torch.full((4, 28, 28), 255, dtype=torch.uint8), n_clutter=1)
    p = tc.sample_params(torch.Generator().manual_seed(0), 2)
    p["centre"] = torch.tensor([[13.5 + 7, 13.5 + 30], [13.5, 13.5]], dtype=F64)
    clutter = tc.clutter(p)
    assert torch.equal(clutter.flatten(1).sum(1), torch.full((2,), 36.0))  # exactly one 6x6 crop
    out = tc.apply(x, p)
    assert torch.equal(out, torch.maximum(clutter, tc.apply(x, {**p, "clutter_index": p["clutter_index"][:, :0]})))
    digit_only = tc.apply(x, {**p, "clutter_index": p["clutter_index"][:, :0]})
    assert torch.allclose(digit_only[0, :, 30:58, 7:35], x[0], atol=1e-5)


def test_tc_clutter_union_matches_params():
    tc = TranslateClutter(pool=torch.full((4, 28, 28), 255, dtype=torch.uint8))
    p = tc.sample_params(torch.Generator().manual_seed(1), 5)
    mask = torch.zeros(5, 60, 60, dtype=torch.bool)
    for b in range(5):
        for k in range(6):
            px, py = p["clutter_position"][b, k].tolist()
            mask[b, py : py + 6, px : px + 6] = True
    assert torch.equal(tc.clutter(p)[:, 0] > 0, mask)
    summed = TranslateClutter(pool=torch.full((4, 28, 28), 100, dtype=torch.uint8), combine="sum").clutter(p)
    assert float(summed.max()) >= 200 / 255 - 1e-6  # overlapping crops add up (clamped at the end of apply)


def test_3d_slab_without_rotation():
    x = _digits(1)
    vol = Extrude3D(canvas=40, depth=6, rotate=False)
    p = {"angle": torch.zeros(1, 3, dtype=F64), "centre": torch.tensor([[13.5 + 4, 13.5 + 2, 2.5 + 20]], dtype=F64)}
    out = vol.apply(x, p, compute_dtype=F64)
    assert out.shape == (1, 1, 40, 40, 40)
    for z in range(20, 26):
        assert torch.allclose(out[0, 0, z, 2:30, 4:32], x[0, 0], atol=1e-6)
    assert float(out[0, 0, :20].abs().max()) < 1e-6 and float(out[0, 0, 26:].abs().max()) < 1e-6


def test_3d_rotation_keeps_mass_and_chunks_agree():
    x = _digits(3)
    vol, small = Extrude3D(canvas=40, depth=6), Extrude3D(canvas=40, depth=6, chunk=1)
    p = vol.sample_params(torch.Generator().manual_seed(0), 3)
    out = vol.apply(x, p)
    assert torch.equal(out, small.apply(x, p))
    mass = out.flatten(1).sum(1) / (x.flatten(1).sum(1) * 6)
    assert torch.allclose(mass, torch.ones(3), atol=0.05)


# ---------------------------------------------------------------------------------------------- errors


def test_bad_variant_suggests():
    with pytest.raises(OptionError, match="variant must be one of .*Did you mean 'RTS'"):
        get_distortion("RST")
    with pytest.raises(OptionError, match="unknown"):
        get_distortion("R", scale_range=(1, 2))
    with pytest.raises(OptionError, match=r"'canvs' for variant 'R' \(it takes \[.*'canvas'.*Did you mean 'canvas'"):
        get_distortion("r", canvs=42)
    with pytest.raises(OptionError, match="variant 'plain' [(]it takes no options[)]"):  # not ['args', 'kwargs']
        get_distortion("plain", canvas=42)


def test_the_registry_reads_as_the_dict_it_replaces():
    assert set(DISTORTIONS) == {"plain", "R", "RTS", "P", "E", "TC", "ICSTN"} == set(DISTORTIONS.keys())
    assert DISTORTIONS["RTS"] is RotateTranslateScale and DISTORTIONS["rts"] is RotateTranslateScale
    assert dict(DISTORTIONS.items())["TC"] is TranslateClutter and Elastic in DISTORTIONS.values()
    assert DISTORTIONS.canonical("tc") == "TC" and get_distortion("e").name == "E"
    with pytest.raises(KeyError):
        DISTORTIONS["RST"]
    with pytest.raises(TypeError):
        DISTORTIONS["X"] = Plain  # read-only: new variants go through register_distortion


def test_a_variant_name_is_registered_once_in_any_case():
    with pytest.raises(OptionError, match="'rts' is already registered"):
        register_distortion("rts")(Plain)
    assert DISTORTIONS["RTS"] is RotateTranslateScale and Plain.name == "plain"


def test_canonical_variant_is_a_deprecated_spelling():
    with pytest.warns(DeprecationWarning, match="DISTORTIONS.canonical"):
        assert canonical_variant("tc") == "TC"
    with pytest.warns(DeprecationWarning):
        assert canonical_variant("addition", ("addition", "3D")) == "addition"
    with pytest.warns(DeprecationWarning), pytest.raises(OptionError, match="Did you mean 'RTS'"):
        canonical_variant("RST")


@pytest.mark.parametrize(
    "build",
    [
        lambda: RotateTranslateScale(max_angle=200),
        lambda: RotateTranslateScale(scale_range=(1.2, 0.7)),
        lambda: RotateTranslateScale(scale_range=(0.0, 1.0)),
        lambda: RotateTranslateScale(canvas=0),
        lambda: RotateTranslateScale(placement="random"),
        lambda: ProjectiveJitter(sigma=-1),
        lambda: Elastic(grid_size=1),
        lambda: TranslateClutter(clutter_size=40),
        lambda: TranslateClutter(combine="mean"),
        lambda: Extrude3D(depth=0),
    ],
)
def test_bad_options_raise_option_error(build):
    with pytest.raises(OptionError):
        build()


def test_bad_inputs():
    rts = RotateTranslateScale()
    p = rts.sample_params(None, 2)
    with pytest.raises(ShapeError):
        rts.apply(torch.rand(2, 28, 28), p)
    with pytest.raises(ShapeError, match="3 images"):
        rts.apply(torch.rand(3, 1, 28, 28), p)
    with pytest.raises(DTypeError):
        rts.apply(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), p)
    with pytest.raises(OptionError):
        rts.sample_params(None, -1)
    with pytest.raises(OptionError, match="pool"):
        TranslateClutter().sample_params(None, 2)
    with pytest.raises(DataError):
        TranslateClutter(pool=torch.zeros(4, 20, 20))
