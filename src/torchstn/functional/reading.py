"""How a sampler reads an image: the checked arguments and the padding shared by the plain sampler
(``sample.py``) and the anti-aliased one (``antialias.py``), below both so neither imports the other's internals."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchstn._checks import check_bool, check_fill_value, check_float_tensor, check_rank, look_up_option
from torchstn.errors import OptionError, ShapeError

__all__ = ["MODES", "PADDING_MODES", "check_deterministic", "check_sample_args", "match_grid", "read_padded"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection", "fill")


def check_sample_args(input, grid, mode, padding_mode, fill_value=0.0, align_corners=False):
    """Validate the tensors and options of a sampler call (:func:`~torchstn.functional.sample.sample`,
    :func:`~torchstn.functional.antialias.sample_antialiased`); returns ``grid`` expanded to the batch of ``input``.

    Raises:
        DTypeError, ShapeError, OptionError: what :func:`~torchstn.functional.sample.sample` lists.

    Example:
        >>> check_sample_args(torch.rand(2, 1, 4, 4), torch.zeros(1, 3, 3, 2), "bilinear", "zeros").shape
        torch.Size([2, 3, 3, 2])
    """
    check_float_tensor("input", input)
    check_float_tensor("grid", grid)
    check_rank("input", input, (4, 5), "(B, C, H, W) / (B, C, D, H, W)")
    look_up_option("mode", mode, MODES)
    look_up_option("padding_mode", padding_mode, PADDING_MODES)
    check_fill_value(fill_value)  # its form only: a loop over padding modes may pass one fill_value to all
    check_bool("align_corners", align_corners)
    grid = match_grid(input, grid)
    if mode == "bicubic" and input.dim() == 5:
        raise OptionError("mode='bicubic' is only available for 2D inputs (PyTorch has no tricubic sampler)")
    return grid


def match_grid(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``grid`` expanded to the batch of ``input``, after checking that it fits the input's rank and batch: the one
    check relating a sampler's two tensors, which a caller that validated everything else still needs (its grid
    comes from a network's output, e.g. a localisation net that loses the batch).

    Raises:
        ShapeError: a grid of another rank or last dim than the input's spatial rank, or of another batch size
            (but 1, which is broadcast).

    Example:
        >>> match_grid(torch.rand(2, 1, 4, 4), torch.zeros(3, 4, 4, 2))
        Traceback (most recent call last):
        ...
        torchstn.errors.ShapeError: grid batch size 3 does not match input batch size 2 (a grid of batch 1 is broadcast)
    """
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
    return grid


def read_padded(input, grid, mode, padding_mode, fill_value, align_corners, read=None):
    """``read(x, padding_mode, grid)`` samples ``x`` at ``grid`` (default ``F.grid_sample``); this adds the fill
    padding.

    ``fill`` reads ``input`` with zero padding and adds ``fill`` times the weight of the taps outside the image,
    ``1 - read(ones, "zeros")``, so wherever every tap is inside the fill contributes nothing (up to the sampler's
    rounding of its weights: exactly 0 on most points, at most ``|fill| * 1.5e-6`` in float32). (Sampling
    ``input - fill`` and adding ``fill`` back cancels the data's digits when ``|fill|`` is large: a bf16 image in
    ``[0, 1]`` with ``fill_value=-1000`` came back all zeros.) Half precision is computed in float32 here, since its
    kernels' weights do not sum to 1 closely enough (bicubic bf16: off by 0.1).
    """
    if read is None:

        def read(x, padding, grid):
            return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)

    if padding_mode != "fill":
        return read(input, padding_mode, grid)
    work = torch.promote_types(input.dtype, torch.float32)
    input, grid = input.to(work), grid.to(work)
    fill = torch.as_tensor(fill_value, dtype=work, device=input.device)
    if fill.dim() == 1:
        if fill.shape[0] != input.shape[1]:
            raise ShapeError(f"fill_value must be a scalar or ({input.shape[1]},) per channel, got {tuple(fill.shape)}")
        fill = fill.view(1, -1, *([1] * (input.dim() - 2)))
    elif fill.dim() != 0:
        raise ShapeError(f"fill_value must be a scalar or a (C,) tensor, got shape {tuple(fill.shape)}")
    inside = read(
        input.new_ones((1, 1, *input.shape[2:])).expand(input.shape[0], 1, *input.shape[2:]), "zeros", grid
    )  # (B, 1, *out): the weight of the taps inside the image
    return read(input, "zeros", grid) + fill * (1 - inside)


def check_deterministic(deterministic: object, mode: str, antialias: bool) -> bool | None:
    """Validate the ``deterministic`` option of a sampler (also at a module's construction, with the same message).

    Example:
        >>> check_deterministic(True, "bicubic", False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: deterministic=True supports mode='bilinear' and 'nearest' ..., got mode='bicubic'...
    """
    if deterministic not in (None, True, False):
        raise OptionError(f"deterministic must be True, False or None, got {deterministic!r}")
    if deterministic and (mode not in ("bilinear", "nearest") or antialias):
        raise OptionError(
            "deterministic=True supports mode='bilinear' and 'nearest' without antialias, got "
            f"mode={mode!r}, antialias={antialias}"
        )
    return deterministic  # narrowed to bool | None by the check above
