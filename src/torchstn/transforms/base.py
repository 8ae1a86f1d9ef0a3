"""Transform families and their registry.

A family turns a parameter vector ``theta (B, P)`` into a sampling grid. Every family provides ``num_params``,
``identity()``, ``grid(theta, out_size)``, ``transform_points(theta, points)``, ``footprint(theta, in_size,
out_size)`` (the exact anti-aliasing footprint, or ``None`` to estimate it from the grid) and the spatial ranks it
supports; families with a matrix form also provide ``matrix(theta)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from torchstn._checks import check_finite, check_float_tensor, check_size
from torchstn._registry import Registry
from torchstn._tracing import jit_tracing_paused
from torchstn.errors import OptionError, ShapeError

__all__ = ["TransformFamily", "register_transform", "get_transform", "list_transforms", "transform_options"]


class TransformFamily:
    """Base class of every transform family. Subclasses set ``name`` and ``ranks`` and implement the maps."""

    name: ClassVar[str] = ""
    #: Spatial ranks the family supports: (2,) for images, (3,) for volumes.
    ranks: ClassVar[tuple[int, ...]] = (2,)
    #: Whether :meth:`matrix` exists.
    has_matrix: ClassVar[bool] = True

    @property
    def num_params(self) -> int:
        """``P``, the length of ``theta``; computed once per family.

        Not a ``functools.cached_property``: on Python <= 3.11 its first read takes a lock, which ``torch.compile``
        cannot trace (``fullgraph=True`` of a module that never ran eagerly failed).
        """
        n = getattr(self, "_num_params", None)
        if n is None:
            if torch.jit.is_tracing():  # else the first of torch.jit.trace's two traces would record identity()
                with jit_tracing_paused():
                    n = int(self.identity().numel())
            else:
                n = int(self.identity().numel())
            self._num_params = n
        return n

    @property
    def spatial_rank(self) -> int:
        return self.ranks[0]

    def identity(self, *, dtype: torch.dtype | None = None, device: torch.device | None = None) -> torch.Tensor:
        """The parameters ``(P,)`` of the identity transform."""
        raise NotImplementedError

    def translation(
        self,
        shift: Sequence[float] | torch.Tensor,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """The parameters ``(P,)`` of the pure translation that reads the input at ``output + shift`` (normalised
        units, ``(x, y[, z])``; ``2 / W`` in x is one pixel with ``align_corners=False``). Every family provides it,
        so the contract tests can check each one with the same whole-pixel shift.

        Raises:
            ShapeError: ``shift`` does not have one entry per spatial axis.
            OptionError: the family cannot express a pure translation (e.g. an attention window of fixed scale
                ``s != 1``).

        Example:
            >>> from torchstn.transforms import get_transform
            >>> get_transform("affine").translation((0.5, 0.0)), get_transform("attention").translation((0.5, 0.0))
            (tensor([1.0000, 0.0000, 0.5000, 0.0000, 1.0000, 0.0000]), tensor([1.0000, 0.5000, 0.0000]))
        """
        raise NotImplementedError

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """``(B, n, n+1)`` affine or ``(B, 3, 3)`` projective matrix of ``theta``.

        Raises:
            OptionError: the family has no matrix form (``has_matrix`` is False, e.g. ``tps``).
        """
        raise OptionError(
            f"transform {self.name!r} has no matrix form (has_matrix is False); use grid() or transform_points()"
        )

    def grid(self, theta: torch.Tensor, out_size: Sequence[int] | int, *, align_corners: bool = False) -> torch.Tensor:
        """Sampling grid ``(B, *out_size, n)`` of ``theta (B, P)``."""
        raise NotImplementedError

    def transform_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Map output points ``(B, N, n)`` to the input points they read."""
        raise NotImplementedError

    def footprint(
        self, theta: torch.Tensor, in_size: Sequence[int], out_size: Sequence[int], *, align_corners: bool = False
    ) -> torch.Tensor | None:
        """The exact footprint ``d(input pixel) / d(output pixel)`` for anti-aliased sampling: ``(B, n, n)`` per
        sample, or ``None`` where it varies over the image (the sampler then estimates it per pixel from the grid).
        See :func:`torchstn.functional.antialias.affine_jacobian`."""
        return None

    # -- validation shared by every family -------------------------------------------------------------------
    def check_theta(self, theta: object, *, finite: bool = True) -> torch.Tensor:
        """Validate ``theta`` as a float ``(B, P)`` tensor (optionally finite) and return it."""
        theta = check_float_tensor("theta", theta)
        if theta.dim() != 2 or theta.shape[1] != self.num_params:
            raise ShapeError(
                f"theta for transform {self.name!r} must be (B, {self.num_params}), got {tuple(theta.shape)}"
            )
        if finite:
            check_finite("theta", theta)
        return theta

    def check_shift(self, shift: object, dtype: torch.dtype | None, device: torch.device | None) -> torch.Tensor:
        """``shift`` as a ``(n,)`` tensor of the given dtype (default: torch's) for :meth:`translation`."""
        t = torch.as_tensor(shift, dtype=dtype or torch.get_default_dtype(), device=device)
        if t.shape != (self.spatial_rank,):
            raise ShapeError(
                f"shift for transform {self.name!r} must hold {self.spatial_rank} numbers "
                f"(x, y{', z' if self.spatial_rank == 3 else ''}), got shape {tuple(t.shape)}"
            )
        return t

    def check_out_size(self, out_size: object) -> tuple[int, ...]:
        return check_size("out_size", out_size, self.spatial_rank)

    def check_points(self, points: object, batch: int) -> torch.Tensor:
        points = check_float_tensor("points", points)
        n = self.spatial_rank
        if points.dim() != 3 or points.shape[-1] != n or points.shape[0] not in (1, batch):
            raise ShapeError(f"points must be (B={batch}, N, {n}), got {tuple(points.shape)}")
        return points.expand(batch, -1, -1)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


_FAMILIES: Registry[type[TransformFamily]] = Registry("transform")


def register_transform(name: str) -> Callable[[type[TransformFamily]], type[TransformFamily]]:
    """Class decorator registering a family under ``name`` (which it sets as the class's ``name``), so
    :func:`get_transform` builds it and the contract tests (``tests/transforms``) run over it.

    Raises:
        OptionError: ``name`` is already registered.
    """

    def deco(cls: type[TransformFamily]) -> type[TransformFamily]:
        _FAMILIES.register(name, cls)
        cls.name = name
        return cls

    return deco


def list_transforms() -> list[str]:
    """Names of every registered family.

    Example:
        >>> "affine" in list_transforms() and "tps" in list_transforms()
        True
    """
    return _FAMILIES.names()


def transform_options(name: str) -> tuple[str, ...]:
    """The option names the family ``name`` takes (its constructor's keyword arguments).

    Raises:
        OptionError: unknown name (with a suggestion).

    Example:
        >>> transform_options("tps"), transform_options("affine")
        (('grid_size', 'regularisation', 'precompute', 'layout', 'kernel_eps'), ())
    """
    return _FAMILIES.options(name)


def get_transform(name: str | TransformFamily, **options) -> TransformFamily:
    """Return the family ``name`` built with ``options`` (e.g. ``get_transform("tps", grid_size=5)``).

    Raises:
        OptionError: unknown name (with a suggestion) or an option the family does not take.

    Example:
        >>> get_transform("tps").num_params
        32
        >>> get_transform("affine").identity()
        tensor([1., 0., 0., 0., 1., 0.])
        >>> get_transform("affine", grid_size=3)
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: unknown keyword 'grid_size' for transform 'affine' (it takes no options).
    """
    if isinstance(name, TransformFamily):
        if options:
            raise OptionError(f"options {sorted(options)} given with an already built family {name!r}")
        return name
    return _FAMILIES.build(name, **options)
