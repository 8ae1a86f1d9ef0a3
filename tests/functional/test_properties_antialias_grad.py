"""Randomised sweep: the anti-aliased sampler's gradients agree with finite differences all over its option space.

Every example draws a transform (affine, isotropic rotation+scale, integer-ratio anisotropic, projective, TPS,
3D affine, 3D isotropic), a zoom between upsampling and ~6x zoom-out, sizes, a padding mode (fill included),
``align_corners``, ``tap_share`` and the footprint source (estimated from the grid, or ``affine_jacobian`` for the
matrix families), then compares ``d sum(w * V) / d theta`` with central differences, entry by entry, and the input
gradient along a random direction (``V`` is linear in the input: that difference is exact).

How the sweep stays off the filter's kinks instead of loosening tolerances. The filter is smooth in theta except on
thin sets where it is piecewise by construction, and there a central difference legitimately differs from any
derivative:

(a) a bilinear read whose coordinate, at the pyramid level it reads, sits on a pixel centre (an integer) or a
    padding edge (an integer or, for reflection, a half-integer);
(b) a per-pixel pyramid level that is an integer (the blend between levels is piecewise linear), including level 0
    where the no-downsampling clamp starts, and the top level (the image's single pixel), where it is clamped;
(c) tap counts changing (``ceil`` of the edge ratios: the result jumps);
(d) an edge length at ``1 + TOLERANCE`` (the no-downsampling threshold: a jump).

Continuous parameters come from a seeded torch generator (hypothesis draws the seed and the discrete options): its
float strategies favour round values, which sit exactly on (a)-(d). Each example is then *rejected* (``assume``)
when any read coordinate, level, tap ratio or edge length is within ``MARGIN`` of such a set, computed from the
documented filter (``footprint_plan``, the docstring of ``_plan``), far wider than the finite-difference step moves
them. Isotropic footprints and integer edge ratios, where the level used a plain maximum of edge lengths (the
original bug: the gradient there matched no finite difference), are drawn on purpose and never rejected.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import torchstn
from torchstn.functional.antialias import (
    MAX_TAPS,
    TOLERANCE,
    affine_jacobian,
    footprint_plan,
    grid_jacobian,
    sample_antialiased,
)

EPS = 1e-7  # finite-difference step on theta (float64)
MARGIN = 2e-5  # distance (level pixels, levels, ratios) kept from every kink; EPS moves coordinates by ~1e-6
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
KINDS_2D = ("affine", "isotropic", "integer_ratio", "projective", "tps")
KINDS_3D = ("affine3d", "isotropic3d")
MATRIX_KINDS = ("affine", "isotropic", "integer_ratio", "affine3d", "isotropic3d")


def _rotation(n: int, gen: torch.Generator) -> torch.Tensor:
    if n == 2:
        a = float(torch.rand((), generator=gen, dtype=torch.float64)) * 2 * math.pi
        return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _theta(kind: str, batch: int, zoom: list[float], gen: torch.Generator):
    """``(family, theta (B, P))`` of a random transform of ``kind``; ``zoom`` (per sample) scales the region read."""

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    n = 3 if kind.endswith("3d") else 2
    if kind in ("projective", "tps"):
        fam = torchstn.get_transform(kind, **({"grid_size": 3} if kind == "tps" else {}))
        ident = fam.identity(dtype=torch.float64)
        rows = []
        for z in zoom:
            if kind == "projective":
                t = ident * z
                t[[2, 5]] = rnd(2, scale=0.2)
                t[6:] = rnd(2, scale=0.15)  # mild perspective: w stays well above the horizon
                rows.append(t + rnd(8, scale=0.1) * torch.tensor([z, z, 0, z, z, 0, 0, 0], dtype=torch.float64))
            else:
                rows.append(ident * z + rnd(ident.numel(), scale=0.08 * z))
        return fam, torch.stack(rows)
    fam = torchstn.get_transform("affine3d" if n == 3 else "affine")
    mats = []
    for z in zoom:
        if kind in ("isotropic", "isotropic3d"):
            lin = z * _rotation(n, gen)
        elif kind == "integer_ratio":  # edges whose ratio is exactly 2 or 3: the tap count divides the long edge
            m = 2.0 + float(torch.randint(2, (), generator=gen))
            lin = _rotation(2, gen) @ torch.diag(torch.tensor([z, z / m], dtype=torch.float64))
        else:
            lin = _rotation(n, gen) @ torch.diag(z * (0.5 + torch.rand(n, generator=gen, dtype=torch.float64)))
            lin = lin + rnd(n, n, scale=0.15 * z)
        mats.append(torch.cat((lin, rnd(n, 1, scale=0.2)), 1))
    return fam, torch.stack(mats).flatten(1)


def _pixel(grid: torch.Tensor, in_size, align_corners: bool) -> torch.Tensor:
    """Normalised grid -> input pixel coordinates (pixel centres at integers), per axis (x, y[, z])."""
    size = grid.new_tensor([float(s) for s in reversed(in_size)])
    return (grid + 1) / 2 * (size - 1) if align_corners else ((grid + 1) * size - 1) / 2


def _far_from_kinks(grid, jac, in_size, align_corners, tap_share) -> bool:
    """Whether the filter is smooth within ``MARGIN`` of this configuration (points (a)-(d) of the module doc)."""
    n = grid.shape[-1]
    if jac.dim() == 3:  # per sample -> per pixel
        jac = jac.view(jac.shape[0], *([1] * n), n, n).expand(*grid.shape[:-1], n, n)
    w = jac.square().sum(-2).sqrt()  # (B, *out, n) edge lengths, input px
    if ((w - (1 + TOLERANCE)).abs() < MARGIN).any():  # (d)
        return False
    wp = torch.where(w > 1 + TOLERANCE, w, 1.0)
    need = (wp / wp.amin(-1, keepdim=True).clamp_max(tap_share)).reshape(-1, n).amax(0)  # (c)
    for ratio in need.tolist():  # N_c = min(MAX_TAPS, ceil(ratio - 1e-3))
        r = ratio - 1e-3
        if round(r) < MAX_TAPS and abs(r - round(r)) < MARGIN:
            return False
    level, span, counts = footprint_plan(jac, tap_share=tap_share)  # level (B, *out), span (B, *out, n)
    k = wp.new_tensor(counts)
    # (b): a level exactly 0 is safe where it is 0 for a margin around (all edges below the threshold, or every
    # px-per-tap below 1 - MARGIN except edges clamped to exactly 1)
    per_tap = wp / k
    zero_ok = ((per_tap < 1 - MARGIN) | ((wp == 1) & (k == 1))).all(-1)
    top = max(1, math.ceil(math.log2(max(in_size))))
    near = (level - level.round()).abs() < MARGIN
    if (near & ~((level == 0) & zero_ok)).any() or ((level - top).abs() < MARGIN).any():
        return False
    # (a) every tap of every pixel at every level read: distance to the half-integer lattice
    u = _pixel(grid, in_size, align_corners)  # (B, *out, n)
    taps = u.unsqueeze(1)  # (B, 1, *out, n)
    for c, kc in enumerate(counts):
        if kc == 1:
            continue
        edge = jac[..., :, c] * (span[..., c] / wp[..., c]).unsqueeze(-1)  # (B, *out, n)
        pos = torch.linspace(-0.5, 0.5, kc, dtype=u.dtype).view(1, kc, *([1] * (n + 1)))
        taps = (taps.unsqueeze(2) + (pos * edge.unsqueeze(1)).unsqueeze(1)).flatten(1, 2)
    lo = math.floor(float(level.min()))
    hi = min(math.ceil(float(level.max())), top)
    for lev in range(lo, hi + 1):
        coords = taps if lev == 0 else (taps + 0.5) / 2**lev - 0.5
        if ((2 * coords - (2 * coords).round()).abs() < 2 * MARGIN).any():
            return False
    return True


@st.composite
def _configs(draw):
    kind = draw(st.sampled_from(KINDS_2D + KINDS_3D))
    n = 3 if kind.endswith("3d") else 2
    square = kind.startswith("isotropic") or kind == "integer_ratio"  # so the footprint itself is isotropic
    lo_in, hi_in, hi_out = (6, 14, 6) if n == 2 else (4, 8, 3)
    in_size = (
        (draw(st.integers(lo_in, hi_in)),) * n if square else tuple(draw(st.integers(lo_in, hi_in)) for _ in range(n))
    )
    out_size = (draw(st.integers(2, hi_out)),) * n if square else tuple(draw(st.integers(1, hi_out)) for _ in range(n))
    return {
        "kind": kind,
        "seed": draw(st.integers(0, 2**31 - 1)),
        "in_size": in_size,
        "out_size": out_size,
        "batch": draw(st.integers(1, 2)),
        "padding": draw(st.sampled_from(["zeros", "border", "reflection", "fill"])),
        "align_corners": draw(st.booleans()),
        "tap_share": draw(st.sampled_from([math.inf, math.inf, 2.0, 1.0])),
        "from_matrix": kind in MATRIX_KINDS and draw(st.booleans()),
    }


@SETTINGS
@given(cfg=_configs())
def test_antialiased_gradients_match_finite_differences(cfg):
    in_size, out_size, ac = cfg["in_size"], cfg["out_size"], cfg["align_corners"]
    gen = torch.Generator().manual_seed(cfg["seed"])
    zoom = [0.5 + 2.5 * float(torch.rand((), generator=gen)) for _ in range(cfg["batch"])]  # per sample
    fam, theta0 = _theta(cfg["kind"], cfg["batch"], zoom, gen)
    x = torch.rand(cfg["batch"], 2, *in_size, generator=gen, dtype=torch.float64)
    weights = torch.randn(cfg["batch"], 2, *out_size, generator=gen, dtype=torch.float64)
    fill = float(torch.rand((), generator=gen)) * 2 - 1

    def jacobian(theta):
        return affine_jacobian(fam.matrix(theta), in_size, out_size, ac) if cfg["from_matrix"] else None

    def loss(x, theta):
        grid = fam.grid(theta, out_size, align_corners=ac)
        opts = {"padding_mode": cfg["padding"], "fill_value": fill, "align_corners": ac, "jacobian": jacobian(theta)}
        if cfg["tap_share"] == math.inf:  # the user path
            v = torchstn.sample(x, grid, antialias=True, **opts)
        else:
            v = sample_antialiased(x, grid, tap_share=cfg["tap_share"], **opts)
        return (v * weights).sum()

    with torch.no_grad():
        grid = fam.grid(theta0, out_size, align_corners=ac)
        jac = jacobian(theta0)
        jac = grid_jacobian(grid, in_size, ac) if jac is None else jac
        assume(_far_from_kinks(grid, jac, in_size, ac, cfg["tap_share"]))
    theta = theta0.clone().requires_grad_()
    xg = x.clone().requires_grad_()
    d_x, d_theta = torch.autograd.grad(loss(xg, theta), (xg, theta))
    numeric = torch.empty_like(theta0)
    with torch.no_grad():
        for i in range(theta0.numel()):
            step = torch.zeros_like(theta0).view(-1)
            step[i] = EPS
            step = step.view_as(theta0)
            numeric.view(-1)[i] = (loss(x, theta0 + step) - loss(x, theta0 - step)) / (2 * EPS)
        direction = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        numeric_x = (loss(x + direction, theta0) - loss(x - direction, theta0)) / 2
    scale = 1.0 + float(numeric.abs().max())
    torch.testing.assert_close(d_theta, numeric, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close((d_x * direction).sum(), numeric_x, atol=1e-9 * (1 + abs(float(numeric_x))), rtol=0)
