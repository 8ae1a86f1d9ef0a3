"""Compositional and recurrent spatial transformers (IC-STN, Lin & Lucey, CVPR 2017).

A :class:`CompositionalSpatialTransformer` runs ``steps`` localisation passes. Each pass sees the input warped by
the transform composed so far, predicts a *correction*, and composes it onto that transform; every warp, the last
included, resamples **the original input** from the composed matrix, so nothing is resampled twice and nothing a
step pushes out of the frame is lost for the next one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from torchstn._checks import autocast_enabled, autocast_off, check_bool, check_positive_int, check_size
from torchstn._tracing import is_tracing
from torchstn.errors import ExportError, OptionError, ShapeError
from torchstn.functional.affine import compose_affine
from torchstn.nn.spatial_transformer import SpatialTransformer
from torchstn.transforms import TransformFamily, get_transform

__all__ = ["CompositionalSpatialTransformer", "composable_families"]


def _composable_reason(family: TransformFamily) -> str | None:
    """Why ``family`` cannot compose, or ``None`` when it can."""
    if not family.has_matrix:
        return (
            f"transform {family.name!r} has no matrix form: the composite of two warps of this family is no warp of "
            f"the family (two thin-plate splines compose to a map no single spline on the same control points gives)"
        )
    ident = family.identity(dtype=torch.float64).unsqueeze(0)
    m = family.matrix(ident)[0]
    eye = torch.eye(m.shape[-1], dtype=torch.float64)[: m.shape[0]]
    if not torch.allclose(m, eye):
        return (
            f"transform {family.name!r} starts at a transform that is not the identity map ({family!r}), so a "
            f"correction could not start at 'no change'"
        )
    return None


def composable_families() -> list[str]:
    """The registered transform families a :class:`CompositionalSpatialTransformer` can compose (built with their
    default options).

    Example:
        >>> fams = composable_families()
        >>> "projective" in fams and "affine3d" in fams, "tps" in fams
        (True, False)
    """
    from torchstn.transforms import list_transforms

    return [name for name in list_transforms() if _composable_reason(get_transform(name)) is None]


class CompositionalSpatialTransformer(nn.Module):
    """A spatial transformer that refines its warp in ``steps`` compositional passes (the IC-STN of Lin & Lucey).

    With ``M_0`` the identity (or ``theta_init``), step ``k`` samples ``view_k = sample(U, M_k)`` (at the input's
    size; the first view of an identity start is ``U`` itself), predicts a correction ``d_k = head(loc(view_k))`` of
    the family, and composes ``M_{k+1} = compose_affine(M_k, matrix(d_k))``: the correction acts as a warp of
    ``view_k``, so an output point ``p`` reads ``U`` at ``M_k @ matrix(d_k) @ p``. The output is
    ``sample(U, M_steps)`` at ``out_size``. ``shared=True`` (IC-STN) ties one localisation net and head across the
    steps; ``shared=False`` (c-STN) gives each step its own. With ``steps=1`` it computes exactly what a
    :class:`SpatialTransformer` with the same weights computes.

    Families that compose: every family with a matrix whose starting parameters are the identity map (affine,
    attention, similarity, translation, projective, affine3d, attention3d, translation3d; see
    :func:`composable_families`). The composite is carried as a matrix (``(B, n, n+1)``, or ``(B, 3, 3)`` with
    ``h33 = 1`` for ``projective``), since e.g. a similarity's parameters are not the product's entries.
    ``tps`` cannot compose (the composite of two splines is no spline of the family) and a
    ``fixed_scale_translation`` window other than the default (scale 1, centre 0) does not start at the identity:
    both are refused.

    Args:
        localisation: the localisation network (a module), or a callable returning a new one; with
            ``shared=False`` a callable is called once per step, a module is deep-copied per step.
        transform: a composable family's name or a built family.
        out_size: spatial size of the output; ``None`` keeps the input's. The views the steps see are always at the
            input's size (the localisation net was built for it).
        steps: the number of passes (localisation runs), at least 1.
        shared: one localisation net and head for every step (IC-STN) or one per step.
        **st_options: the options of :class:`SpatialTransformer` (``in_features``, ``mode``, ``padding_mode``,
            ``fill_value``, ``align_corners``, ``bound``, ``check_finite``, ``antialias``, ``deterministic``,
            ``head``; a ``head`` is deep-copied per step when not shared), applied to every pass.

    Calling it: ``cst(U, theta_init=None, return_theta=False, return_steps=False)``. ``theta_init (B, P)``, the
    family's parameters, is the warp to start from (the IC-STN protocol starts from the perturbation). With
    ``return_theta`` returns ``(V, matrix)``, the final composite; with ``return_steps`` returns
    ``(V, matrices, views)``: ``matrices (B, steps, *matrix)`` the composite after each step and
    ``views (B, steps, C, *in)`` what each step's localisation net saw (for pictures, see
    :func:`torchstn.experiments.viz.save_compositional_steps`).

    Raises:
        OptionError: at construction: a family that cannot compose (saying why), ``steps`` not a positive int,
            ``shared`` not a bool, ``localisation`` neither a module nor a callable returning one, or any error of
            :class:`SpatialTransformer`'s options (with a suggestion for a typo).
        ShapeError, DTypeError, NonFiniteError: at forward, as :class:`SpatialTransformer` says; a ``theta_init``
            that is not ``(B, P)`` of the family.

    Example:
        >>> loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU())
        >>> cst = CompositionalSpatialTransformer(loc, "projective", steps=4, in_features=32)
        >>> x = torch.rand(2, 1, 28, 28)
        >>> v, mats, views = cst(x, return_steps=True)
        >>> torch.allclose(v, x, atol=1e-5), tuple(mats.shape), tuple(views.shape)  # the identity at init
        (True, (2, 4, 3, 3), (2, 4, 1, 28, 28))
    """

    def __init__(
        self,
        localisation: nn.Module | Callable[[], nn.Module],
        transform: str | TransformFamily = "affine",
        out_size: Sequence[int] | int | None = None,
        *,
        steps: int = 4,
        shared: bool = True,
        **st_options,
    ):
        super().__init__()
        self.steps = check_positive_int("steps", steps)
        self.shared = check_bool("shared", shared)
        first = SpatialTransformer(_new_localisation(localisation, copy_module=False), transform, **st_options)
        reason = _composable_reason(first.family)
        if reason is not None:
            raise OptionError(
                f"CompositionalSpatialTransformer cannot compose {reason}. Use a family from "
                f"{composable_families()}, or a SpatialTransformer for this one"
            )
        predictors = [first]
        for _ in range(0 if self.shared else self.steps - 1):
            options = dict(st_options)
            if isinstance(options.get("head"), nn.Module):
                options["head"] = copy.deepcopy(options["head"])
            predictors.append(
                SpatialTransformer(_new_localisation(localisation, copy_module=True), transform, **options)
            )
        self.predictors = nn.ModuleList(predictors)
        self.family = first.family
        rank = self.family.spatial_rank
        self.out_size = None if out_size is None else check_size("out_size", out_size, rank)
        self._projective = first.family.matrix(first.family.identity().unsqueeze(0)).shape[-2] == rank + 1
        self._carrier = get_transform("projective" if self._projective else ("affine" if rank == 2 else "affine3d"))

    def predictor(self, step: int = 0) -> SpatialTransformer:
        """The :class:`SpatialTransformer` (localisation net and head) of step ``step`` (0-based; every step's is
        the same one when ``shared``)."""
        return cast(SpatialTransformer, self.predictors[0 if self.shared else step])

    @property
    def align_corners(self) -> bool:
        """The coordinate convention of the grids (see ``docs/conventions.md``)."""
        return self.predictor().align_corners

    def initial_matrix(self, U: torch.Tensor, theta_init: torch.Tensor | None = None) -> torch.Tensor:
        """``M_0``: the matrix of ``theta_init (B, P)``, or the identity matrix for every sample of ``U``.

        Raises:
            ShapeError, DTypeError, NonFiniteError: ``theta_init`` is not a finite float ``(B, P)`` of the family
                with ``U``'s batch size.
        """
        if theta_init is None:
            ident = self.family.identity(dtype=U.dtype, device=U.device).unsqueeze(0)
            return self._normalise(self.family.matrix(ident.expand(U.shape[0], -1)))
        theta_init = self.family.check_theta(theta_init)
        if not torch.jit.is_tracing() and theta_init.shape[0] != U.shape[0]:
            raise ShapeError(
                f"theta_init must hold one transform per sample of the input (batch {U.shape[0]}), got "
                f"shape {tuple(theta_init.shape)}"
            )
        return self._normalise(self.family.matrix(theta_init))

    def _normalise(self, matrix: torch.Tensor) -> torch.Tensor:
        """A projective composite scaled to ``h33 = 1`` (the family's convention); affine ones unchanged."""
        return matrix / matrix[:, 2:3, 2:3] if self._projective else matrix

    def warp(self, U: torch.Tensor, matrix: torch.Tensor, out_size: Sequence[int] | None = None) -> torch.Tensor:
        """Sample ``U`` with a composite ``matrix`` (as :meth:`forward` returns) at ``out_size`` (default: the
        module's, else the input's), with the module's sampling options.

        Raises:
            ShapeError, DTypeError: ``U`` as :meth:`forward` says.
        """
        self.predictor()._check_input(U)
        size = out_size if out_size is not None else (self.out_size or tuple(U.shape[2:]))
        return self._sample(U, matrix, tuple(size))

    def grid(self, matrix: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """The sampling grid ``(B, *out_size, n)`` of a composite ``matrix`` (as :meth:`forward` returns), in the
        module's ``align_corners`` convention.

        Raises:
            ShapeError, DTypeError: a matrix of another shape than the module's composites, a bad ``out_size``.
        """
        return self._carrier.grid(self._carrier_theta(matrix), out_size, align_corners=self.align_corners)

    def _carrier_theta(self, matrix: torch.Tensor) -> torch.Tensor:
        """The carrier family's parameters (affine: the matrix's entries; projective: the first 8) of ``matrix``."""
        return matrix.flatten(1)[:, :8] if self._projective else matrix.flatten(1)

    def _sample(self, U: torch.Tensor, matrix: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        st = self.predictor()
        if st.antialias and is_tracing():
            raise ExportError(
                "a CompositionalSpatialTransformer with antialias=True cannot be traced or exported (see "
                "SpatialTransformer); rebuild it with antialias=False and load the same state_dict"
            )
        if autocast_enabled(U.device):
            with autocast_off(U.device):
                return self._sample_float(U, matrix.float(), size)
        return self._sample_float(U, matrix, size)

    def _sample_float(self, U: torch.Tensor, matrix: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.predictor().resample(U, self._carrier_theta(matrix), size, family=self._carrier)

    def forward(
        self,
        U: torch.Tensor,
        theta_init: torch.Tensor | None = None,
        return_theta: bool = False,
        return_steps: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Transform ``U`` in ``steps`` compositional passes (see the class docstring for the outputs).

        The flags are not keyword-only: the TorchScript ONNX exporter passes every argument positionally."""
        first = self.predictor()
        first._check_input(U)
        M = self.initial_matrix(U, theta_init)
        view = U if theta_init is None else self._sample(U, M, tuple(U.shape[2:]))
        matrices, views = [], []
        for k in range(self.steps):
            predictor = self.predictor(k)
            correction = predictor.family.matrix(predictor.predict_theta(view))
            M = self._normalise(compose_affine(M, correction))
            if return_steps:
                matrices.append(M)
                views.append(view)
            if k + 1 < self.steps:
                view = self._sample(U, M, tuple(U.shape[2:]))
        V = self._sample(U, M, self.out_size or tuple(U.shape[2:]))
        if return_steps:
            return V, torch.stack(matrices, dim=1), torch.stack(views, dim=1)
        return (V, M) if return_theta else V

    def __prepare_scriptable__(self):
        """Refuse ``torch.jit.script`` with the way out (the family is a Python object TorchScript cannot compile)."""
        raise ExportError(
            "CompositionalSpatialTransformer cannot be compiled with torch.jit.script (its transform family is a "
            "Python object); use torch.jit.trace(model, example_input), torch.export or torch.onnx.export "
            "(see docs/deploy.md)"
        )

    def extra_repr(self) -> str:
        return f"steps={self.steps}, shared={self.shared}, family={self.family!r}, out_size={self.out_size}"


def _new_localisation(localisation: object, *, copy_module: bool) -> nn.Module:
    """The localisation net of one step: the module itself (or a deep copy), or what the callable returns."""
    if isinstance(localisation, nn.Module):
        return copy.deepcopy(localisation) if copy_module else localisation
    if callable(localisation):
        made = localisation()
        if isinstance(made, nn.Module):
            return made
        raise OptionError(f"localisation, a callable, must return a torch.nn.Module, returned {type(made).__name__}")
    raise OptionError(
        f"localisation must be a torch.nn.Module or a callable returning one, got {type(localisation).__name__}"
    )
