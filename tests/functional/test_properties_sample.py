"""Randomised properties of ``torchstn.sample``: it equals an independent numpy sampler, and the deterministic path
equals ``F.grid_sample`` (forward and both gradients), over modes, paddings, ``align_corners``, 2D / 3D and sizes
down to 1.

The numpy reference is written from the documented semantics (``docs/conventions.md`` for the coordinates,
PyTorch's ``grid_sample`` documentation for the kernels and padding), not from torchstn's code:

* a normalised coordinate ``g`` is pixel ``(g + 1) / 2 (n - 1)`` (``align_corners=True``) or ``((g + 1) n - 1) / 2``;
* ``border`` clamps to ``[0, n - 1]``; ``reflection`` mirrors at the border pixel centres (``align_corners=True``)
  or at the image edges ``-0.5`` and ``n - 0.5`` (``False``), then clamps; bilinear and nearest apply this to the
  point, bicubic to each of its 4 taps;
* bilinear (trilinear in 3D) weights ``1 - t, t``; nearest rounds half to even; bicubic is Keys' cubic with
  ``A = -0.75`` on taps ``floor(x) - 1 .. floor(x) + 2``;
* a tap outside the image reads 0 (``zeros``) or the fill value (``fill``: the image extended by ``fill_value``).

Continuous values come from a generator seeded by hypothesis (which draws the discrete options), so that points sit
on exact rounding ties of ``nearest`` only with probability 0; pixel-lattice grids are drawn on purpose for the other
modes and for the deterministic path, whose gradients at pixel centres and clamp bounds must match too.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import torchstn

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)
A = -0.75  # Keys' cubic


def _pixel(g: np.ndarray, n: int, align_corners: bool) -> np.ndarray:
    return (g + 1) / 2 * (n - 1) if align_corners else ((g + 1) * n - 1) / 2


def _mirror(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Mirror ``x`` into ``[lo, hi]`` (a triangle wave of period ``2 (hi - lo)``)."""
    if hi == lo:
        return np.full_like(x, lo)
    period = 2 * (hi - lo)
    y = np.mod(x - lo, period)
    return lo + np.where(y <= hi - lo, y, period - y)


def _pad(x: np.ndarray, n: int, padding: str, align_corners: bool) -> np.ndarray:
    if padding == "border":
        return np.clip(x, 0, n - 1)
    if padding == "reflection":
        x = _mirror(x, 0.0, n - 1.0) if align_corners else _mirror(x, -0.5, n - 0.5)
        return np.clip(x, 0, n - 1)
    return x


def _cubic(d: np.ndarray) -> np.ndarray:
    d = np.abs(d)
    return np.where(d <= 1, ((A + 2) * d - (A + 3)) * d * d + 1, ((A * d - 5 * A) * d + 8 * A) * d - 4 * A)


def _axis(g: np.ndarray, n: int, mode: str, padding: str, align_corners: bool):
    """Taps along one axis for points ``g (P,)``: indices and weights ``(T, P)``."""
    x = _pixel(g, n, align_corners)
    if mode == "bicubic":
        base = np.floor(x)
        idx = base[None] + np.arange(-1, 3)[:, None]
        w = _cubic(x[None] - idx)
        return _pad(idx, n, padding, align_corners), w
    x = _pad(x, n, padding, align_corners)
    if mode == "nearest":
        return np.rint(x)[None], np.ones((1, x.size))
    base = np.floor(x)
    return np.stack((base, base + 1)), np.stack((base + 1 - x, x - base))


def reference_sample(x, grid, mode, padding, align_corners, fill=0.0):
    """numpy sampler: ``x (B, C, *in)``, ``grid (B, *out, n)`` -> ``(B, C, *out)``."""
    B, C, *in_size = x.shape
    n, out_size = len(in_size), grid.shape[1:-1]
    fill = np.broadcast_to(np.asarray(fill, dtype=np.float64), (C,))
    out = np.zeros((B, C, int(np.prod(out_size))))
    for b in range(B):
        pts = grid[b].reshape(-1, n)
        # axis d of the input (D, H, W order) is grid column n - 1 - d
        taps = [_axis(pts[:, n - 1 - d], in_size[d], mode, padding, align_corners) for d in range(n)]
        for combo in itertools.product(*(range(idx.shape[0]) for idx, _ in taps)):
            weight = np.prod([taps[d][1][t] for d, t in enumerate(combo)], axis=0)  # (P,)
            index = [taps[d][0][t] for d, t in enumerate(combo)]
            inside = np.all([(i >= 0) & (i <= in_size[d] - 1) for d, i in enumerate(index)], axis=0)
            safe = [np.where(inside, i, 0).astype(np.int64) for i in index]
            values = x[b][(slice(None), *safe)]  # (C, P)
            outside = fill[:, None] if padding == "fill" else 0.0
            out[b] += weight * np.where(inside, values, outside)
    return out.reshape(B, C, *out_size)


@st.composite
def _configs(draw, modes=("bilinear", "nearest", "bicubic"), paddings=("zeros", "border", "reflection", "fill")):
    mode = draw(st.sampled_from(modes))
    n = 2 if mode == "bicubic" else draw(st.sampled_from([2, 3]))
    return {
        "seed": draw(st.integers(0, 2**31 - 1)),
        "mode": mode,
        "n": n,
        "padding": draw(st.sampled_from(paddings)),
        "align_corners": draw(st.booleans()),
        "in_size": tuple(draw(st.integers(1, 6)) for _ in range(n)),
        "out_size": tuple(draw(st.integers(1, 5)) for _ in range(n)),
        "batch": draw(st.integers(1, 3)),
        "channels": draw(st.integers(1, 3)),
        "grid": draw(
            st.sampled_from(["near", "wide", "far", "lattice"] if mode != "nearest" else ["near", "wide", "far"])
        ),
        "shared_grid": draw(st.booleans()),
        "per_channel_fill": draw(st.booleans()),
    }


def _draw(cfg):
    """Input, grid (batch 1 when shared) and fill value of a configuration."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    x = torch.rand(cfg["batch"], cfg["channels"], *cfg["in_size"], generator=gen, dtype=torch.float64)
    gb = 1 if cfg["shared_grid"] else cfg["batch"]
    grid = torch.rand(gb, *cfg["out_size"], cfg["n"], generator=gen, dtype=torch.float64) * 2 - 1
    if cfg["grid"] == "near":
        grid = grid * 1.3
    elif cfg["grid"] == "wide":
        grid = grid * 4
    elif cfg["grid"] == "far":  # 30 % of the points far outside
        far = torch.tensor([57.0, -1e3, 1e4], dtype=torch.float64)
        pick = torch.randint(3, grid.shape, generator=gen)
        grid = torch.where(torch.rand(grid.shape, generator=gen) < 0.3, far[pick], grid * 1.3)
    else:  # exact 1/8 lattice: pixel centres, edges and clamp bounds for the small sizes drawn here
        grid = (grid * 1.3 * 8).round() / 8
    fill = (
        torch.rand(cfg["channels"], generator=gen, dtype=torch.float64) * 4 - 2
        if cfg["per_channel_fill"]
        else float(torch.rand((), generator=gen)) * 4 - 2
    )
    return x, grid, fill


@SETTINGS
@given(cfg=_configs())
def test_sample_equals_the_numpy_reference(cfg):
    x, grid, fill = _draw(cfg)
    ac, padding, mode = cfg["align_corners"], cfg["padding"], cfg["mode"]
    got = torchstn.sample(x, grid, mode=mode, padding_mode=padding, fill_value=fill, align_corners=ac)
    full = grid.expand(x.shape[0], *grid.shape[1:]).numpy()
    fill_np = fill.numpy() if isinstance(fill, torch.Tensor) else fill
    ref = reference_sample(x.numpy(), full, mode, padding, ac, fill_np)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-9, rtol=0)
    if padding != "fill":  # the reference itself against PyTorch's kernel
        direct = F.grid_sample(
            x, grid.expand(x.shape[0], *grid.shape[1:]), mode=mode, padding_mode=padding, align_corners=ac
        )
        np.testing.assert_allclose(direct.numpy(), ref, atol=1e-9, rtol=0)


@SETTINGS
@given(cfg=_configs(modes=("bilinear", "nearest"), paddings=("zeros", "border", "reflection", "fill")))
def test_deterministic_path_equals_grid_sample_with_gradients(cfg):
    x, grid, fill = _draw(cfg)
    grid = grid.expand(x.shape[0], *grid.shape[1:]).clone()
    opts = {
        "mode": cfg["mode"],
        "padding_mode": cfg["padding"],
        "fill_value": fill,
        "align_corners": cfg["align_corners"],
    }
    grad_out = torch.randn(
        x.shape[:2] + grid.shape[1:-1], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    results = []
    for det in (True, False):
        xg, gg = x.clone().requires_grad_(), grid.clone().requires_grad_()
        out = torchstn.sample(xg, gg, deterministic=det, **opts)
        results.append((out, *torch.autograd.grad(out, (xg, gg), grad_out)))
    for name, a, b in zip(("output", "input grad", "grid grad"), *results):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=lambda m, name=name: f"{name}: {m}")
