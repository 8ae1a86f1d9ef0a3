"""A thin-plate-spline rectifier for text recognition (RARE, Shi et al. CVPR 2016; ASTER; the TPS stage of TRBA).

The rectifier is a :class:`~torchstn.nn.SpatialTransformer` with the ``tps`` family on a ``2 x (K/2)`` layout:
``K`` fiducial points in two rows along the top and bottom edges of the rectified image. The localisation net
predicts where those points lie in the input (``theta (B, 2K)``, ``(x, y)`` pairs, top row left to right, then the
bottom row), the TPS through them gives the sampling grid, and the input is read with border padding.

Frames. torchstn's convention (``docs/conventions.md``) puts ``+-1`` at the outer edges of the image. The TPS stage
of clovaai's deep-text-recognition-benchmark builds its output grid at pixel centres in that same frame, but samples
with ``align_corners=True``, so its *predicted* points put ``+-1`` at the centres of the corner pixels. With
``theta_align_corners=True`` the rectifier reads theta in that frame: before sampling it scales ``x`` by
``(W - 1) / W`` and ``y`` by ``(H - 1) / H`` of the input it is given (the TPS grid is linear in theta, so this is
exactly sampling with ``align_corners=True``), which keeps imported weights exact at any input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from torchstn._checks import check_bool, check_float_tensor, check_positive_int, look_up_option
from torchstn.errors import OptionError, ShapeError
from torchstn.functional.tps import control_points
from torchstn.nn.head import ThetaHead
from torchstn.nn.spatial_transformer import SpatialTransformer
from torchstn.transforms.tps import ThinPlateSpline

__all__ = ["TPSRectifier", "rare_initial_points", "text_localisation"]

INITS = ("rare", "identity")


def rare_initial_points(num_fiducial: int = 20, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The published initial fiducial positions ``(K, 2)`` of RARE's Fig. 6(a) as clovaai's TPS sets them: x evenly
    from -1 to 1 in both rows, the top row's y from 0 up to -1, the bottom row's from 1 up to 0 (a slanted band;
    not the identity, whose rows lie at y = -1 and y = 1).

    Raises:
        OptionError: ``num_fiducial`` is not an even int >= 6 (two rows of at least 3).

    Example:
        >>> rare_initial_points(6)
        tensor([[-1.0000,  0.0000],
                [ 0.0000, -0.5000],
                [ 1.0000, -1.0000],
                [-1.0000,  1.0000],
                [ 0.0000,  0.5000],
                [ 1.0000,  0.0000]])
    """
    per_row = _per_row(num_fiducial)
    dtype = dtype or torch.get_default_dtype()
    x = torch.linspace(-1.0, 1.0, per_row, dtype=torch.float64)
    top = torch.stack((x, torch.linspace(0.0, -1.0, per_row, dtype=torch.float64)), 1)  # (K/2, 2)
    bottom = torch.stack((x, torch.linspace(1.0, 0.0, per_row, dtype=torch.float64)), 1)
    return torch.cat((top, bottom)).to(dtype)


def _per_row(num_fiducial: object) -> int:
    if isinstance(num_fiducial, bool) or not isinstance(num_fiducial, int) or num_fiducial < 6 or num_fiducial % 2:
        raise OptionError(f"num_fiducial must be an even int >= 6 (two rows of >= 3 points), got {num_fiducial!r}")
    return num_fiducial // 2


def text_localisation(
    in_channels: int = 1, channels: Sequence[int] = (64, 128, 256, 512), fc: int = 256
) -> nn.Sequential:
    """RARE/TRBA's localisation net: four ``3x3 conv (no bias) - BatchNorm - ReLU`` blocks, a 2x2 max-pool after the
    first three, global average pooling, then ``Linear(channels[-1], fc) - ReLU``. It takes any input size; its
    output is ``(B, fc)`` features (the regression layer is the rectifier's head).

    Module indices follow the TRBA checkpoint's ``conv`` block (0, 1, 4, 5, 8, 9, 12, 13 hold weights), then
    ``17`` is the fully connected layer, so :func:`torchstn.nn.load_trba_tps` maps keys one to one.

    Raises:
        OptionError: not four positive channel counts, or a non-positive ``in_channels`` / ``fc``.

    Example:
        >>> text_localisation(1, (4, 4, 8, 8), fc=16)(torch.rand(2, 1, 32, 100)).shape
        torch.Size([2, 16])
    """
    in_channels = check_positive_int("in_channels", in_channels)
    fc = check_positive_int("fc", fc)
    chans = tuple(channels)
    if len(chans) != 4:
        raise OptionError(f"text_localisation takes 4 channel counts (one per conv block), got {channels!r}")
    layers: list[nn.Module] = []
    for i, c in enumerate(chans):
        c = check_positive_int("channels", c)
        layers += [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2, 2) if i < 3 else nn.AdaptiveAvgPool2d(1))  # (B, c, H/2^i, W/2^i) ... (B, c, 1, 1)
        in_channels = c
    layers += [nn.Flatten(), nn.Linear(in_channels, fc), nn.ReLU(inplace=True)]  # index 17: the fc layer
    loc = nn.Sequential(*layers)
    loc.out_features = fc  # type: ignore[assignment]  # SpatialTransformer reads the head's in_features here
    return loc


class TPSRectifier(SpatialTransformer):
    """Rectify text images with a thin-plate spline through ``K`` fiducial points (two rows along the top and bottom
    edges), e.g. before a recogniser. Any input width; the output size is fixed (``out_size``); the ``state_dict``
    holds only the localisation net and the regression head (no size-dependent buffer).

    Build the RARE/TRBA configuration with :meth:`rare`; import a TRBA checkpoint with
    :func:`torchstn.nn.load_trba_tps`.

    Args:
        localisation: module mapping the input ``(B, C, H, W)`` to features ``(B, F)``.
        in_features: ``F`` (default: ``localisation.out_features``).
        out_size: ``(H, W)`` of the rectified image.
        num_fiducial: ``K``, even, >= 6: a ``2 x K/2`` layout.
        init: where the head starts: ``"rare"`` (RARE Fig. 6(a), see :func:`rare_initial_points`) or
            ``"identity"`` (the points at their layout positions: an untrained rectifier resamples the input).
        padding_mode, mode: passed to :func:`torchstn.sample` (``"border"``, ``"bilinear"`` as in RARE).
        theta_align_corners: read theta in the frame of clovaai's TPS (``+-1`` at corner pixel centres); see the
            module docstring.
        regularisation: the TPS's ``lambda``.
        kernel_eps: ``1e-6`` for clovaai's kernel ``r^2 log(r + 1e-6)``, 0 for the exact ``r^2 log r^2`` (see
            :class:`~torchstn.transforms.ThinPlateSpline`).

    Raises:
        OptionError: a bad ``num_fiducial``, ``init``, mode or flag.

    Example:
        >>> loc = text_localisation(1, (4, 4, 8, 8), fc=16)
        >>> rect = TPSRectifier(loc, out_size=(8, 25), init="identity")
        >>> rect(torch.rand(3, 1, 32, 120)).shape
        torch.Size([3, 1, 8, 25])
        >>> sorted(k for k in rect.state_dict() if not k.startswith("localisation"))
        ['head.linear.bias', 'head.linear.weight']
    """

    def __init__(
        self,
        localisation: nn.Module,
        *,
        in_features: int | None = None,
        out_size: Sequence[int] = (32, 100),
        num_fiducial: int = 20,
        init: Literal["rare", "identity"] = "identity",
        padding_mode: str = "border",
        mode: str = "bilinear",
        theta_align_corners: bool = False,
        regularisation: float = 0.0,
        kernel_eps: float = 0.0,
    ):
        family = ThinPlateSpline(
            layout=(2, _per_row(num_fiducial)), regularisation=regularisation, kernel_eps=kernel_eps
        )
        init = look_up_option("init", init, INITS)  # type: ignore[assignment]
        start = rare_initial_points(num_fiducial).reshape(-1) if init == "rare" else family.identity()
        if in_features is None:
            in_features = getattr(localisation, "out_features", None)
        super().__init__(
            localisation, family, out_size, mode=mode, padding_mode=padding_mode, head=ThetaHead(in_features, start)
        )
        self.init = init
        self.theta_align_corners = check_bool("theta_align_corners", theta_align_corners)

    @classmethod
    def rare(
        cls,
        in_channels: int = 1,
        out_size: Sequence[int] = (32, 100),
        *,
        num_fiducial: int = 20,
        channels: Sequence[int] = (64, 128, 256, 512),
        fc: int = 256,
        **options,
    ) -> TPSRectifier:
        """The RARE/TRBA rectifier: :func:`text_localisation`, 20 fiducial points, the Fig. 6(a) initialisation,
        border padding, output 32 x 100. ``options`` go to the constructor (e.g. ``theta_align_corners``).

        Example:
            >>> rect = TPSRectifier.rare(channels=(4, 4, 8, 8), fc=16)
            >>> rect.family.layout, rect(torch.rand(2, 1, 32, 100)).shape
            ((2, 10), torch.Size([2, 1, 32, 100]))
        """
        loc = text_localisation(in_channels, channels, fc)
        options.setdefault("init", "rare")
        return cls(loc, out_size=out_size, num_fiducial=num_fiducial, **options)

    def fiducial_points(self) -> torch.Tensor:
        """The fiducial points' positions ``(K, 2)`` in the rectified image (the layout, torchstn's frame)."""
        return control_points(self.family.layout, dtype=torch.get_default_dtype())  # type: ignore[attr-defined]

    def sampling_theta(self, theta: torch.Tensor, in_size: Sequence[int]) -> torch.Tensor:
        """``theta`` in torchstn's frame for an input of size ``(H, W)``: itself, or with ``theta_align_corners``
        its ``x`` scaled by ``(W - 1) / W`` and ``y`` by ``(H - 1) / H``."""
        if not self.theta_align_corners:
            return theta
        H, W = in_size[-2], in_size[-1]  # ints, or traced sizes: the scale then follows the input
        B = theta.shape[0]
        pts = theta.view(B, -1, 2)  # (B, K, 2)
        one = pts.new_ones(())
        scale = torch.stack((one * ((W - 1) / W), one * ((H - 1) / H))).to(pts.dtype)  # (2,) = (x, y)
        return (pts * scale).reshape(B, -1)

    def forward(
        self, U: torch.Tensor, loc_input: torch.Tensor | None = None, return_theta: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Rectify ``U (B, C, H, W)`` -> ``(B, C, *out_size)``; ``loc_input`` (default ``U``) is what the
        localisation net sees; with ``return_theta=True`` also the predicted theta (in the rectifier's frame).

        Raises:
            ShapeError: ``U`` is not 4-D, or ``loc_input`` has another batch size.
            DTypeError: ``U`` is not floating point.
            NonFiniteError: the localisation net gave NaN/inf.
        """
        check_float_tensor("input", U)
        if U.dim() != 4:
            raise ShapeError(f"TPSRectifier takes (B, C, H, W) images, got shape {tuple(U.shape)}")
        if (
            loc_input is not None
            and not torch.jit.is_tracing()
            and check_float_tensor("loc_input", loc_input).shape[0] != U.shape[0]
        ):
            raise ShapeError(
                f"loc_input must hold batch {U.shape[0]} like the input, got shape {tuple(loc_input.shape)}"
            )
        theta = self.predict_theta(U if loc_input is None else loc_input)
        V = self.warp(U, self.sampling_theta(theta, U.shape[-2:]))
        return (V, theta) if return_theta else V

    def extra_repr(self) -> str:
        return super().extra_repr() + f", init={self.init!r}, theta_align_corners={self.theta_align_corners}"
