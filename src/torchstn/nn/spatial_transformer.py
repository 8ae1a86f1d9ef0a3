"""The SpatialTransformer module: localisation net -> theta -> grid -> sample (paper §3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchstn._checks import (
    autocast_enabled,
    autocast_off,
    check_bool,
    check_fill_value,
    check_finite,
    check_float_tensor,
    check_keywords,
    check_size,
    keyword_options,
    look_up_option,
)
from torchstn._tracing import is_tracing
from torchstn.errors import ExportError, OptionError, ShapeError
from torchstn.functional.reading import check_deterministic
from torchstn.functional.sample import MODES, PADDING_MODES, sample_unchecked
from torchstn.nn.head import ThetaHead
from torchstn.transforms import TransformFamily, get_transform
from torchstn.transforms.base import transform_options as family_options

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
            inferred at the first forward: until then the head's weight is uninitialised, so parameter shapes and
            :func:`torchstn.param_groups` are known only after one forward (build the optimiser after it).
        mode, padding_mode, fill_value, align_corners, check_finite: passed to :func:`torchstn.sample`;
            ``fill_value`` (a number, one per channel, or a ``(C,)`` tensor) needs ``padding_mode="fill"``.
        antialias: sample with ``torchstn.sample(..., antialias=True)`` so an ST that zooms out does not alias
            (bilinear only). Affine families pass their exact per-sample footprint; the others estimate it per pixel.
        bound: keep every parameter within ``bound`` of the identity through a tanh (see :class:`ThetaHead`).
        deterministic: passed to :func:`torchstn.sample`: ``True`` uses the sampler whose input gradient is
            deterministic on CUDA (bilinear / nearest, no antialias); ``None`` picks it under torch's deterministic
            mode on CUDA (see ``docs/determinism.md``).
        head: a module mapping the localisation features ``(B, F)`` to ``theta (B, P)`` instead of the default
            identity-initialised :class:`ThetaHead` (e.g. a head that keeps an attention window inside the image);
            it should start at the family's identity.
        **transform_options: options of the family, e.g. ``grid_size=4`` for ``"tps"``.

    Calling it: ``st(U, loc_input=None, return_theta=False)``; ``loc_input`` (default ``U``) is what the
    localisation net sees, a float tensor with ``U``'s batch size. A ``channels_last`` input gives an
    NCHW-contiguous output, as ``F.grid_sample`` does.

    Raises:
        OptionError: at construction: ``localisation`` not a module; unknown transform, keyword (with a suggestion),
            option or mode; ``mode="bicubic"`` with a 3D family; a non-bool ``align_corners`` / ``check_finite`` /
            ``antialias``; a malformed ``fill_value`` or a non-zero one without ``padding_mode="fill"``;
            ``antialias`` with a mode other than bilinear, or ``deterministic=True`` with ``mode="bicubic"`` or
            ``antialias``.
        ShapeError: at forward: an input whose spatial rank the family does not support, a ``loc_input`` of another
            batch size, localisation features that do not match ``in_features`` (or an input of another shape than
            the one :func:`torchstn.conv_localisation` / :func:`torchstn.fc_localisation` was built for).
        DTypeError: at forward: a non-float input or ``loc_input``.
        NonFiniteError: at forward, with ``check_finite``: a NaN/inf theta; the message says whether the
            localisation input holds NaN/inf (the data is at fault) or the network diverged.

    Example:
        >>> loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU())
        >>> st = SpatialTransformer(loc, "affine", in_features=32)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> v, theta = st(x, return_theta=True)
        >>> torch.allclose(v, x, atol=1e-5), tuple(theta.shape)  # identity up to float32 rounding of the grid
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
        head: nn.Module | None = None,
        **transform_options,
    ):
        super().__init__()
        if not isinstance(localisation, nn.Module):
            raise OptionError(
                f"localisation must be a torch.nn.Module (the localisation network), got {type(localisation).__name__}"
            )
        _check_transform_options(transform, transform_options)
        self.family = get_transform(transform, **transform_options)
        self.mode = look_up_option("mode", mode, MODES)
        self.padding_mode = look_up_option("padding_mode", padding_mode, PADDING_MODES)
        check_fill_value(fill_value, self.padding_mode)
        self.fill_value = fill_value
        self.align_corners = check_bool("align_corners", align_corners)
        self.check_finite = check_bool("check_finite", check_finite)
        self.antialias = check_bool("antialias", antialias)
        if self.mode == "bicubic" and 2 not in self.family.ranks:
            raise OptionError(
                f"mode='bicubic' is 2D only (PyTorch has no tricubic sampler); transform "
                f"{self.family.name!r} works on volumes: use mode='bilinear' or 'nearest'"
            )
        if self.antialias and self.mode != "bilinear":
            raise OptionError(f"antialias=True needs mode='bilinear', got mode={self.mode!r}")
        self.deterministic = check_deterministic(deterministic, self.mode, self.antialias)
        rank = self.family.spatial_rank
        self.out_size = None if out_size is None else check_size("out_size", out_size, rank)
        self.localisation = localisation
        if head is None:
            if in_features is None:
                in_features = getattr(localisation, "out_features", None)
            head = ThetaHead(in_features, self.family.identity(), bound)
        elif not isinstance(head, nn.Module):
            raise OptionError(f"head must be a torch.nn.Module mapping features to theta, got {type(head).__name__}")
        elif bound is not None or in_features is not None:
            raise OptionError(
                "bound= and in_features= configure the default head; with head= set them on your own head"
            )
        self.head = head

    def _check_input(self, U: torch.Tensor) -> None:
        check_float_tensor("input", U)
        rank = U.dim() - 2
        if rank not in self.family.ranks:
            want = " or ".join(f"{r + 2}-D" for r in self.family.ranks)
            raise ShapeError(
                f"transform {self.family.name!r} works on {want} inputs, got shape {tuple(U.shape)}"
                + ("; use 'affine3d' / 'attention3d' / 'translation3d' for volumes" if rank == 3 else "")
            )

    def _check_loc_input(self, U: torch.Tensor, loc_input: object) -> None:
        if loc_input is None:
            return
        loc_input = check_float_tensor("loc_input", loc_input)
        if loc_input.dim() == 0 or (not torch.jit.is_tracing() and loc_input.shape[0] != U.shape[0]):
            raise ShapeError(
                f"loc_input must hold one sample per sample of the input (batch {U.shape[0]}), got "
                f"shape {tuple(loc_input.shape)}"
            )

    def predict_theta(self, U: torch.Tensor) -> torch.Tensor:
        """Run the localisation net and head: ``U -> theta (B, P)``.

        Raises:
            NonFiniteError: non-finite theta (with ``check_finite``); the message says whether ``U`` holds NaN/inf.
            ShapeError: the localisation features do not match the head's ``in_features``.
        """
        theta = self.head(self._localise(U))
        if self.check_finite:
            check_finite("theta", theta, source=("localisation input", U))
        return theta

    def _localise(self, U: torch.Tensor) -> torch.Tensor:
        """``self.localisation(U)``; an error it raises keeps its type and text and gains a note naming the input."""
        try:
            return self.localisation(U)
        except RuntimeError as exc:  # e.g. a size mismatch inside the user's own network
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(
                    f"(raised by the localisation network of SpatialTransformer on an input of shape "
                    f"{tuple(U.shape)}: was it built for this input size?)"
                )
            raise

    def warp(self, U: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Sample ``U`` with the transform ``theta`` (no localisation): the grid generator plus the sampler.

        Under autocast the grid is built and sampled in float32 from ``theta.float()`` (autocast off here): a
        bfloat16 grid is off by ~0.1 px on MNIST sizes; the output keeps ``U``'s dtype.

        Raises:
            DTypeError, ShapeError: ``U`` or ``theta`` as :meth:`forward` and the family's ``grid`` say.
        """
        self._check_input(U)
        return self._warp(U, theta)

    def _warp(self, U: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """:meth:`warp` of a checked ``U``."""
        if autocast_enabled(U.device):
            with autocast_off(U.device):
                return self._grid_and_sample(U, theta.float())
        return self._grid_and_sample(U, theta)

    def _grid_and_sample(self, U: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if self.antialias and is_tracing():
            raise ExportError(
                "a SpatialTransformer with antialias=True cannot be traced or exported: it picks "
                "pyramid levels and tap counts from the data, so a trace would freeze those of the "
                "example input. Rebuild it with antialias=False and load the same state_dict "
                "(outputs then differ where the transform zooms out)"
            )
        size = self.out_size if self.out_size is not None else tuple(U.shape[2:])  # traced: follows the input
        return self.resample(U, theta, size)

    def resample(
        self, U: torch.Tensor, theta: torch.Tensor, size: Sequence[int], family: TransformFamily | None = None
    ) -> torch.Tensor:
        """Read a checked ``U`` at the ``size`` grid of ``theta`` in ``family`` (default this module's) with this
        module's sampler options (mode, padding, fill, ``align_corners``, anti-aliasing, determinism): what
        :meth:`warp` does after its checks, for a caller that composes warps itself (e.g.
        :class:`~torchstn.nn.CompositionalSpatialTransformer`, whose composite lives in another family)."""
        family = self.family if family is None else family
        grid = family.grid(theta, size, align_corners=self.align_corners)
        jacobian = (
            family.footprint(theta, U.shape[2:], size, align_corners=self.align_corners) if self.antialias else None
        )  # exact where the family knows it; else estimated from the grid
        # the options were checked at construction, U by forward, theta by predict_theta and the family
        return sample_unchecked(
            U,
            grid,
            mode=self.mode,
            padding_mode=self.padding_mode,
            fill_value=self.fill_value,
            align_corners=self.align_corners,
            antialias=self.antialias,
            jacobian=jacobian,
            deterministic=self.deterministic,
        )

    def forward(
        self, U: torch.Tensor, loc_input: torch.Tensor | None = None, return_theta: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Transform ``U``. ``loc_input`` (default ``U``) is what the localisation net sees; with
        ``return_theta=True`` returns ``(V, theta)``. To log theta without changing calls use
        :func:`torchstn.nn.record_theta`.

        ``return_theta`` is not keyword-only: the TorchScript ONNX exporter (``dynamo=False``) passes every
        argument's default positionally."""
        self._check_input(U)
        self._check_loc_input(U, loc_input)
        theta = self.predict_theta(U if loc_input is None else loc_input)
        V = self._warp(U, theta)
        return (V, theta) if return_theta else V

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this on every module it compiles: refuse with a way out instead of
        TorchScript's error about the transform family (a Python object that TorchScript cannot compile)."""
        raise ExportError(
            "SpatialTransformer cannot be compiled with torch.jit.script (its transform family is a "
            "Python object); use torch.jit.trace(model, example_input), torch.export or "
            "torch.onnx.export (see docs/deploy.md)"
        )

    def extra_repr(self) -> str:
        return (
            f"family={self.family!r}, out_size={self.out_size}, mode={self.mode!r}, "
            f"padding_mode={self.padding_mode!r}, align_corners={self.align_corners}"
            + (", antialias=True" if self.antialias else "")
            + (f", deterministic={self.deterministic}" if self.deterministic is not None else "")
        )


def _check_transform_options(transform: object, options: dict) -> None:
    """Refuse a keyword that is neither an argument of SpatialTransformer nor an option of its family."""
    if not options:
        return
    family_keys = family_options(transform) if isinstance(transform, str) else ()
    own = list(keyword_options(SpatialTransformer.__init__, exclude=("self", "localisation")))
    takes = f"takes {list(family_keys)}" if family_keys else "takes no options"
    check_keywords(f"SpatialTransformer (transform {transform!r} {takes})", options, own + list(family_keys))


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
