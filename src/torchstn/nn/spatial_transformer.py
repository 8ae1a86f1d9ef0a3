"""The SpatialTransformer module: localisation net -> theta -> grid -> sample (paper §3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchstn._checks import autocast_enabled, autocast_off, check_finite, check_float_tensor, check_size, look_up_option
from torchstn._tracing import is_tracing
from torchstn.errors import ExportError, OptionError, ShapeError
from torchstn.functional.antialias import affine_jacobian
from torchstn.functional.sample import MODES, PADDING_MODES, sample
from torchstn.nn.head import ThetaHead
from torchstn.transforms import TransformFamily, get_transform

__all__ = ["SpatialTransformer", "ParallelSpatialTransformers"]


class SpatialTransformer(nn.Module):
    """A spatial transformer: ``V = sample(U, family.grid(head(localisation(U)), out_size))``.

    Works on images and feature maps with any channel count, 2D ``(B, C, H, W)`` or 3D ``(B, C, D, H, W)`` (the
    family decides which). The regression head starts at zero weights and the identity bias, so the untrained module
    returns its input (resampled to ``out_size``).

    Args:
        localisation: any module mapping the input ``(B, C, ...)`` to features ``(B, ...)`` (flattened to ``(B, F)``).
        transform: family name (see :func:`torchstn.list_transforms`) or a built family.
        out_size: spatial output size; ``None`` keeps the input's.
        in_features: feature count ``F`` of ``localisation``; by default its ``out_features`` attribute, else
            inferred at the first forward.
        mode, padding_mode, fill_value, align_corners, check_finite: passed to :func:`torchstn.sample`.
        antialias: sample with ``torchstn.sample(..., antialias=True)`` so an ST that zooms out does not alias
            (bilinear only). Affine families pass their exact per-sample footprint; the others estimate it per pixel.
        bound: keep every parameter within ``bound`` of the identity through a tanh (see :class:`ThetaHead`).
        deterministic: passed to :func:`torchstn.sample`: ``True`` uses the sampler whose input gradient is
            deterministic on CUDA (bilinear / nearest, no antialias); ``None`` picks it under torch's deterministic
            mode on CUDA (see ``docs/determinism.md``).
        **transform_options: options of the family, e.g. ``grid_size=4`` for ``"tps"``.

    Raises:
        OptionError: unknown transform, option or mode, ``antialias`` with a mode other than bilinear, or
            ``deterministic=True`` with ``mode="bicubic"`` or ``antialias``.
        ShapeError: an input whose spatial rank the family does not support.

    Example:
        >>> loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU())
        >>> st = SpatialTransformer(loc, "affine", in_features=32)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> v, theta = st(x, return_theta=True)
        >>> torch.allclose(v, x, atol=1e-6), tuple(theta.shape)
        (True, (4, 6))
    """

    def __init__(
        self,
        localisation: nn.Module,
        transform: str | TransformFamily = "affine",
        out_size: Sequence[int] | int | None = None,
        *,
        in_features: int | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        fill_value: float = 0.0,
        align_corners: bool = False,
        bound: float | None = None,
        check_finite: bool = True,
        antialias: bool = False,
        deterministic: bool | None = None,
        **transform_options,
    ):
        super().__init__()
        self.family = get_transform(transform, **transform_options)
        self.mode = look_up_option("mode", mode, MODES)
        self.padding_mode = look_up_option("padding_mode", padding_mode, PADDING_MODES)
        self.fill_value = fill_value
        self.align_corners = bool(align_corners)
        self.check_finite = bool(check_finite)
        self.antialias = bool(antialias)
        if self.antialias and self.mode != "bilinear":
            raise OptionError(f"antialias=True needs mode='bilinear', got mode={self.mode!r}")
        if deterministic not in (None, True, False):
            raise OptionError(f"deterministic must be True, False or None, got {deterministic!r}")
        if deterministic and (self.mode == "bicubic" or self.antialias):
            raise OptionError("deterministic=True needs mode='bilinear' or 'nearest' and antialias=False, got "
                              f"mode={self.mode!r}, antialias={self.antialias}")
        self.deterministic = deterministic
        rank = self.family.spatial_rank
        self.out_size = None if out_size is None else check_size("out_size", out_size, rank)
        if in_features is None:
            in_features = getattr(localisation, "out_features", None)
        self.localisation = localisation
        self.head = ThetaHead(in_features, self.family.identity(), bound)

    def _check_input(self, U: torch.Tensor) -> None:
        check_float_tensor("input", U)
        rank = U.dim() - 2
        if rank not in self.family.ranks:
            want = " or ".join(f"{r + 2}-D" for r in self.family.ranks)
            raise ShapeError(
                f"transform {self.family.name!r} works on {want} inputs, got shape {tuple(U.shape)}"
                + ("; use 'affine3d' / 'attention3d' / 'translation3d' for volumes" if rank == 3 else "")
            )

    def predict_theta(self, U: torch.Tensor) -> torch.Tensor:
        """Run the localisation net and head: ``U -> theta (B, P)``."""
        theta = self.head(self.localisation(U))
        if self.check_finite:
            check_finite("theta", theta)
        return theta

    def warp(self, U: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Sample ``U`` with the transform ``theta`` (no localisation): the grid generator plus the sampler.

        Under autocast the grid is built and sampled in float32 from ``theta.float()`` (autocast off here): a
        bfloat16 grid is off by ~0.1 px on MNIST sizes; the output keeps ``U``'s dtype.
        """
        if autocast_enabled(U.device):
            with autocast_off(U.device):
                return self._warp(U, theta.float())
        return self._warp(U, theta)

    def _warp(self, U: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if self.antialias and is_tracing():
            raise ExportError("a SpatialTransformer with antialias=True cannot be traced or exported: it picks "
                              "pyramid levels and tap counts from the data, so a trace would freeze those of the "
                              "example input. Rebuild it with antialias=False and load the same state_dict "
                              "(outputs then differ where the transform zooms out)")  # fmt: skip
        size = self.out_size if self.out_size is not None else tuple(U.shape[2:])  # traced: follows the input
        grid = self.family.grid(theta, size, align_corners=self.align_corners)
        jacobian = None
        if self.antialias and self.family.has_matrix:
            matrix = self.family.matrix(theta)
            if matrix.shape[-1] == matrix.shape[-2] + 1:  # affine: the exact per-sample footprint
                jacobian = affine_jacobian(matrix, U.shape[2:], size, self.align_corners)
        return sample(U, grid, mode=self.mode, padding_mode=self.padding_mode, fill_value=self.fill_value,
                      align_corners=self.align_corners, check_finite=False, antialias=self.antialias,
                      jacobian=jacobian, deterministic=self.deterministic)

    def forward(
        self, U: torch.Tensor, loc_input: torch.Tensor | None = None, return_theta: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Transform ``U``. ``loc_input`` (default ``U``) is what the localisation net sees; with
        ``return_theta=True`` returns ``(V, theta)``. To log theta without changing calls use
        :func:`torchstn.nn.record_theta`.

        ``return_theta`` is not keyword-only: the TorchScript ONNX exporter (``dynamo=False``) passes every
        argument's default positionally."""
        self._check_input(U)
        theta = self.predict_theta(U if loc_input is None else loc_input)
        V = self.warp(U, theta)
        return (V, theta) if return_theta else V

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this on every module it compiles: refuse with a way out instead of
        TorchScript's error about the transform family (a Python object that TorchScript cannot compile)."""
        raise ExportError("SpatialTransformer cannot be compiled with torch.jit.script (its transform family is a "
                          "Python object); use torch.jit.trace(model, example_input), torch.export or "
                          "torch.onnx.export (see docs/deploy.md)")  # fmt: skip

    def extra_repr(self) -> str:
        return (f"family={self.family!r}, out_size={self.out_size}, mode={self.mode!r}, "
                f"padding_mode={self.padding_mode!r}, align_corners={self.align_corners}"
                + (", antialias=True" if self.antialias else "")
                + (f", deterministic={self.deterministic}" if self.deterministic is not None else ""))


class ParallelSpatialTransformers(nn.Module):
    """Several spatial transformers on the same input, outputs concatenated along channels (paper: CUB, MNIST
    addition). All must produce the same spatial output size.

    Example:
        >>> loc = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 8))
        >>> par = ParallelSpatialTransformers([SpatialTransformer(loc(), "attention", in_features=8) for _ in range(2)])
        >>> par(torch.rand(3, 2, 8, 8)).shape
        torch.Size([3, 4, 8, 8])
    """

    def __init__(self, transformers: Sequence[SpatialTransformer]):
        super().__init__()
        if len(transformers) == 0:
            raise ShapeError("ParallelSpatialTransformers needs at least one transformer")
        self.transformers = nn.ModuleList(transformers)

    def forward(self, U: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([st(U, loc_input) for st in self.transformers], dim=1)
