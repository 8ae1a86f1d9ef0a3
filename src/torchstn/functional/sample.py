"""The sampler: read an input at the positions of a grid (the paper's differentiable image sampling, §3.3)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from torchstn._checks import check_finite as _check_finite
from torchstn._checks import check_float_tensor, check_rank, look_up_option
from torchstn.errors import OptionError, ShapeError

__all__ = ["sample", "MODES", "PADDING_MODES"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection", "fill")

Mode = Literal["bilinear", "nearest", "bicubic"]
PaddingMode = Literal["zeros", "border", "reflection", "fill"]


def sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    *,
    mode: Mode = "bilinear",
    padding_mode: PaddingMode = "zeros",
    fill_value: float | torch.Tensor = 0.0,
    align_corners: bool = False,
    check_finite: bool = True,
    antialias: bool = False,
    jacobian: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample ``input`` at the normalised positions in ``grid``.

    All options are keyword-only so further sampling modes (e.g. anti-aliasing) can be added without breaking calls.

    Args:
        input: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating-point tensor.
        grid: ``(B, H', W', 2)`` or ``(B, D', H', W', 3)`` normalised source positions, last dim ``(x, y[, z])``
            (see ``docs/conventions.md``). A grid with batch 1 is shared by the whole batch.
        mode: ``"bilinear"`` (trilinear in 3D), ``"nearest"`` or ``"bicubic"`` (2D only).
        padding_mode: what points outside the input read: ``"zeros"``, ``"border"`` (nearest edge pixel),
            ``"reflection"``, or ``"fill"`` (``fill_value``, a scalar or a per-channel ``(C,)`` tensor; use the
            background value of your data, e.g. the normalised black level, so an ST that zooms out does not paste
            an artificial frame).
        fill_value: the value for ``padding_mode="fill"``.
        align_corners: see ``docs/conventions.md``.
        check_finite: raise :class:`~torchstn.NonFiniteError` if the grid holds NaN/inf (the default policy;
            skipped inside ``torch.compile``). With ``False`` non-finite points behave as ``F.grid_sample`` does.
        antialias: average the input over each output pixel's footprint (a mip-map pyramid read trilinearly, plus
            taps along the long edge of anisotropic footprints; see ``docs/antialias.md`` and, for a sharper and
            slower variant, :func:`torchstn.functional.antialias.sample_antialiased`) so that a grid that zooms
            out does not alias. Bilinear only; where the grid does not downsample (footprint <= 1 input pixel on
            every axis) the result is exactly that of ``antialias=False``.
        jacobian: with ``antialias``, the footprint ``d(input pixel)/d(output pixel)``: ``(B, n, n)`` per sample
            (e.g. :func:`torchstn.functional.antialias.affine_jacobian`) or ``(B, *out, n, n)`` per pixel.
            ``None`` estimates it from the grid by finite differences (works for every family).

    Returns:
        ``(B, C, H', W')`` or ``(B, C, D', H', W')`` in the dtype of ``input``.

    Raises:
        DTypeError: non-float ``input`` or ``grid``.
        ShapeError: ranks that do not match, wrong last grid dim, or batch sizes that differ.
        OptionError: unknown ``mode`` / ``padding_mode``, ``bicubic`` on volumes, ``antialias`` with a mode other
            than bilinear, or ``jacobian`` without ``antialias``.
        NonFiniteError: non-finite grid values with ``check_finite=True``.

    Example:
        >>> from torchstn.coords import identity_grid
        >>> x = torch.arange(6.0).view(1, 1, 2, 3)
        >>> torch.equal(sample(x, identity_grid((2, 3))), x)
        True
        >>> checker = (torch.arange(8.0).view(1, 8) + torch.arange(8.0).view(8, 1)) % 2  # 1-pixel squares
        >>> sample(checker.view(1, 1, 8, 8), identity_grid((2, 2)), antialias=True)  # 4x zoom-out: the mean
        tensor([[[[0.5000, 0.5000],
                  [0.5000, 0.5000]]]])
    """
    grid = _check_args(input, grid, mode, padding_mode)
    if check_finite:
        _check_finite("grid", grid)
    if antialias or jacobian is not None:
        if not antialias:
            raise OptionError("jacobian= is only used with antialias=True")
        if mode != "bilinear":
            raise OptionError(f"antialias=True needs mode='bilinear' (trilinear in 3D), got mode={mode!r}")
        from torchstn.functional.antialias import _antialiased  # builds on this module: imported on use

        return _antialiased(input, grid, padding_mode, fill_value, align_corners, jacobian)
    if grid.dtype != input.dtype:
        work = torch.promote_types(grid.dtype, input.dtype)
        out = _sample(input.to(work), grid.to(work), mode, padding_mode, fill_value, align_corners)
        return out.to(input.dtype)
    return _sample(input, grid, mode, padding_mode, fill_value, align_corners)


def _check_args(input, grid, mode, padding_mode):
    """Validate the tensors and options of :func:`sample`; returns ``grid`` expanded to the batch of ``input``."""
    check_float_tensor("input", input)
    check_float_tensor("grid", grid)
    check_rank("input", input, (4, 5), "(B, C, H, W) / (B, C, D, H, W)")
    look_up_option("mode", mode, MODES)
    look_up_option("padding_mode", padding_mode, PADDING_MODES)
    n = input.dim() - 2
    if grid.dim() != n + 2 or grid.shape[-1] != n:
        want = "(B, H', W', 2)" if n == 2 else "(B, D', H', W', 3)"
        raise ShapeError(f"grid for a {input.dim()}-D input must be {want}, got {tuple(grid.shape)}")
    if grid.shape[0] != input.shape[0]:
        if grid.shape[0] != 1:
            raise ShapeError(
                f"grid batch size {grid.shape[0]} does not match input batch size {input.shape[0]} "
                "(a grid of batch 1 is broadcast)"
            )
        grid = grid.expand(input.shape[0], *grid.shape[1:])
    if mode == "bicubic" and n == 3:
        raise OptionError("mode='bicubic' is only available for 2D inputs (PyTorch has no tricubic sampler)")
    return grid


def _sample(input, grid, mode, padding_mode, fill_value, align_corners, read=None):
    """``read(x, padding_mode)`` samples ``x`` at ``grid`` (default ``F.grid_sample``); this adds the fill padding."""
    if read is None:
        def read(x, padding):
            return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)

    if padding_mode != "fill":
        return read(input, padding_mode)
    # The kernel weights of every output point sum to one and zero padding contributes nothing, so sampling
    # (input - fill) with zero padding and adding fill back gives exactly fill outside and a correct blend at edges.
    fill = torch.as_tensor(fill_value, dtype=input.dtype, device=input.device)
    if fill.dim() == 1:
        if fill.shape[0] != input.shape[1]:
            raise ShapeError(f"fill_value must be a scalar or ({input.shape[1]},) per channel, got {tuple(fill.shape)}")
        fill = fill.view(1, -1, *([1] * (input.dim() - 2)))
    elif fill.dim() != 0:
        raise ShapeError(f"fill_value must be a scalar or a (C,) tensor, got shape {tuple(fill.shape)}")
    return read(input - fill, "zeros") + fill
