"""Randomised properties of the maps: every family's grid against numpy written from its documented
parameterisation (``docs/conventions.md``), ``matrix`` against ``F.affine_grid``, ``transform_points`` against the
grid and its inverse, ``compose_affine`` / ``invert_affine``, and two exactness properties of the anti-aliased
sampler (bit-identical to bilinear where nothing downsamples; the block mean on power-of-two aligned zoom-outs).
Hypothesis draws a seed and the discrete options; the values come from a generator seeded with it."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import torchstn
from torchstn.coords import identity_grid
from torchstn.functional.antialias import affine_jacobian

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)
FAMILIES_2D = ("affine", "attention", "similarity", "translation", "projective", "tps")
FAMILIES_3D = ("affine3d", "attention3d", "translation3d")
MATRIX_FAMILIES = (
    "affine",
    "attention",
    "similarity",
    "translation",
    "projective",
    "affine3d",
    "attention3d",
    "translation3d",
)


def _centres(n: int, align_corners: bool) -> np.ndarray:
    """Normalised pixel centres of an axis of ``n`` pixels."""
    i = np.arange(n, dtype=np.float64)
    if align_corners:
        return 2 * i / (n - 1) - 1 if n > 1 else np.zeros(1)
    return (2 * i + 1) / n - 1


def _points(out_size, align_corners: bool) -> np.ndarray:
    """``(*out, n)`` output points, last dim ``(x, y[, z])`` with x along the last spatial dim."""
    axes = np.meshgrid(*(_centres(s, align_corners) for s in out_size), indexing="ij")  # D, H, W order
    return np.stack(axes[::-1], axis=-1)


def _tps(source: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Thin-plate spline through ``c_k -> source_k`` on the control lattice, at points ``p (N, 2)``."""
    k = int(round(math.sqrt(source.shape[0])))
    t = np.linspace(-1, 1, k)
    ctrl = np.stack(np.meshgrid(t, t, indexing="ij")[::-1], -1).reshape(-1, 2)  # row-major, x fastest

    def u(a, b):
        r2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return np.where(r2 > 0, r2 * np.log(np.where(r2 > 0, r2, 1)), 0.0)

    P = np.concatenate((np.ones((k * k, 1)), ctrl), 1)
    L = np.block([[u(ctrl, ctrl), P], [P.T, np.zeros((3, 3))]])
    coef = np.linalg.solve(L, np.concatenate((source, np.zeros((3, 2)))))
    return u(p, ctrl) @ coef[: k * k] + np.concatenate((np.ones((len(p), 1)), p), 1) @ coef[k * k :]


def _numpy_map(name: str, theta: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The documented output->input map of family ``name`` for one sample, at points ``p (N, n)``."""
    if name in ("affine", "affine3d"):
        m = theta.reshape(p.shape[1], -1)
        return p @ m[:, :-1].T + m[:, -1]
    if name in ("attention", "attention3d"):
        return theta[0] * p + theta[1:]
    if name in ("translation", "translation3d"):
        return p + theta
    if name == "similarity":
        a, s = theta[0], math.exp(theta[1])
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        return s * p @ rot.T + theta[2:]
    if name == "projective":
        h = np.append(theta, 1.0).reshape(3, 3)
        hom = np.concatenate((p, np.ones((len(p), 1))), 1) @ h.T
        return hom[:, :2] / hom[:, 2:]
    return _tps(theta.reshape(-1, 2), p)


def _theta(fam, batch: int, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(batch, fam.num_params, generator=gen, dtype=torch.float64) * 0.3
    if fam.name == "projective":
        noise[:, 6:] *= 0.3  # keep w = h31 x + h32 y + 1 well above the horizon on [-1, 1]^2
    return fam.identity(dtype=torch.float64) + noise


@st.composite
def _family_configs(draw):
    name = draw(st.sampled_from(FAMILIES_2D + FAMILIES_3D))
    n = 3 if name in FAMILIES_3D else 2
    return {
        "name": name,
        "seed": draw(st.integers(0, 2**31 - 1)),
        "align_corners": draw(st.booleans()),
        "out_size": tuple(draw(st.integers(1, 8 if n == 2 else 5)) for _ in range(n)),
        "batch": draw(st.integers(1, 3)),
        "grid_size": draw(st.integers(2, 5)),
        "int_size": draw(st.booleans()),
    }


@SETTINGS
@given(cfg=_family_configs())
def test_family_grids_points_and_matrices_match_the_documented_maps(cfg):
    name, ac, out_size = cfg["name"], cfg["align_corners"], cfg["out_size"]
    gen = torch.Generator().manual_seed(cfg["seed"])
    fam = torchstn.get_transform(name, **({"grid_size": cfg["grid_size"]} if name == "tps" else {}))
    theta = _theta(fam, cfg["batch"], gen)
    size = out_size[0] if cfg["int_size"] and len(set(out_size)) == 1 else out_size
    grid = fam.grid(theta, size, align_corners=ac)
    p = _points(out_size, ac).reshape(-1, len(out_size))
    ref = np.stack([_numpy_map(name, t, p) for t in theta.numpy()]).reshape(grid.shape)
    np.testing.assert_allclose(grid.numpy(), ref, atol=1e-9 if name == "tps" else 1e-12, rtol=0)
    np.testing.assert_allclose(fam.grid(theta.float(), size, align_corners=ac).numpy(), ref, atol=2e-5, rtol=0)
    # the identity samples the input unchanged
    ident = fam.grid(fam.identity(dtype=torch.float64).unsqueeze(0), out_size, align_corners=ac)
    torch.testing.assert_close(ident, identity_grid(out_size, ac, dtype=torch.float64), atol=1e-9, rtol=0)
    # points: output_to_input is the grid at the pixel centres; input_to_output inverts it
    pts = torch.from_numpy(p).unsqueeze(0).expand(cfg["batch"], -1, -1)
    there = torchstn.transform_points(fam, theta, pts)
    torch.testing.assert_close(there, grid.reshape(cfg["batch"], -1, len(out_size)), atol=1e-9, rtol=0)
    if name in MATRIX_FAMILIES:
        torch.testing.assert_close(
            torchstn.transform_points(fam, theta, there, "input_to_output"), pts, atol=1e-9, rtol=0
        )
        m = fam.matrix(theta)
        if name != "projective":
            with warnings.catch_warnings():  # PyTorch's note on size-1 grids with align_corners=True
                warnings.simplefilter("ignore", UserWarning)
                ref = F.affine_grid(m, (cfg["batch"], 1, *out_size), align_corners=ac)
            torch.testing.assert_close(ref, grid, atol=1e-12, rtol=0)


def _random_matrix(n: int, projective: bool, batch: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.eye(n + 1, dtype=torch.float64) + 0.4 * torch.randn(
        batch, n + 1, n + 1, generator=gen, dtype=torch.float64
    )
    if not projective:
        return m[:, :n]
    m[:, n, :n] *= 0.3  # w stays positive on [-1, 1]^n
    m[:, n, n] = 1.0
    return m


def _apply(m: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    n = p.shape[-1]
    hom = torch.cat((p, torch.ones_like(p[..., :1])), -1) @ m.transpose(-1, -2)
    return hom[..., :n] / hom[..., n:] if m.shape[-2] == n + 1 else hom


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([2, 3]),
    first_p=st.booleans(),
    second_p=st.booleans(),
    batch=st.integers(1, 3),
)
def test_compose_and_invert(seed, n, first_p, second_p, batch):
    gen = torch.Generator().manual_seed(seed)
    first, second = _random_matrix(n, first_p, batch, gen), _random_matrix(n, second_p, batch, gen)
    p = torch.rand(batch, 30, n, generator=gen, dtype=torch.float64) * 2 - 1
    both = torchstn.compose_affine(first, second)
    torch.testing.assert_close(_apply(both, p), _apply(first, _apply(second, p)), atol=1e-10, rtol=1e-10)
    inv = torchstn.invert_affine(first)
    assert inv.shape == first.shape
    torch.testing.assert_close(_apply(inv, _apply(first, p)), p, atol=1e-9, rtol=0)


# -- the anti-aliased sampler's exact cases ------------------------------------------------------------------------
@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([2, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    padding=st.sampled_from(["zeros", "border", "reflection", "fill"]),
    align_corners=st.booleans(),
    from_matrix=st.booleans(),
    rotation_only=st.booleans(),
)
def test_antialias_without_downsampling_is_bilinear_bit_for_bit(
    seed, n, dtype, padding, align_corners, from_matrix, rotation_only
):
    gen = torch.Generator().manual_seed(seed)
    in_size = tuple(int(v) for v in torch.randint(3, 9 if n == 2 else 6, (n,), generator=gen))
    if rotation_only:  # equal square sizes and a rotation: every footprint edge is exactly one pixel
        in_size = out_size = (in_size[0],) * n
        scale = 1.0
    else:  # upsampling: an output pixel covers at most min(in / out) of an input pixel along any direction
        out_size = tuple(s + int(v) for s, v in zip(in_size, torch.randint(0, 6, (n,), generator=gen)))
        a = int(align_corners)  # pixels per normalised unit: (size - align_corners) / 2, per axis
        scale = float(torch.rand((), generator=gen)) * min(o - a for o in out_size) / max(i - a for i in in_size)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    rot = q * torch.sign(torch.diagonal(r))
    shift = torch.randn(n, 1, generator=gen, dtype=torch.float64) * 0.3
    matrix = torch.cat((scale * rot, shift), 1).unsqueeze(0).to(dtype)
    x = torch.rand(2, 2, *in_size, generator=gen, dtype=torch.float64).to(dtype)
    grid = torchstn.affine_grid(matrix, out_size, align_corners)
    jac = affine_jacobian(matrix, in_size, out_size, align_corners) if from_matrix else None
    opts = {"padding_mode": padding, "fill_value": 0.7, "align_corners": align_corners}
    plain = torchstn.sample(x, grid, **opts)
    assert torch.equal(torchstn.sample(x, grid, antialias=True, jacobian=jac, **opts), plain)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([2, 3]),
    factors=st.lists(st.sampled_from([1, 2, 4, 8]), min_size=3, max_size=3),
    padding=st.sampled_from(["zeros", "border", "reflection", "fill"]),
    from_matrix=st.booleans(),
)
def test_antialias_power_of_two_aligned_zoom_out_is_the_block_mean(seed, n, factors, padding, from_matrix):
    gen = torch.Generator().manual_seed(seed)
    k = tuple(factors[:n])  # per spatial dim (D,) H, W
    # a grid-estimated footprint is zero along an output axis of size 1 (documented): those need the matrix's
    out_size = tuple(int(v) for v in torch.randint(1 if from_matrix else 2, 4, (n,), generator=gen))
    in_size = tuple(o * f for o, f in zip(out_size, k))
    x = torch.rand(2, 2, *in_size, generator=gen, dtype=torch.float64)
    grid = identity_grid(out_size, dtype=torch.float64)
    jac = None
    if from_matrix:
        jac = affine_jacobian(torch.eye(n, n + 1, dtype=torch.float64).unsqueeze(0), in_size, out_size)
    got = torchstn.sample(x, grid, antialias=True, jacobian=jac, padding_mode=padding, fill_value=0.7)
    pool = F.avg_pool2d if n == 2 else F.avg_pool3d
    torch.testing.assert_close(got, pool(x, k), atol=1e-12, rtol=0)
