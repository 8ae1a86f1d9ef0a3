"""Builders for the paper's localisation networks (2D and 3D by the rank of ``in_size``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from torchstn._checks import check_float_tensor, check_positive_int, check_size
from torchstn.errors import ShapeError

__all__ = ["fc_localisation", "conv_localisation", "LocalisationNet"]


class LocalisationNet(nn.Sequential):
    """A Sequential that records its output feature count (read by SpatialTransformer) and checks its input shape: the
    localisation nets of :func:`fc_localisation` and :func:`conv_localisation`, and the base for your own.

    ``in_shape`` is ``(C, *size)`` for a conv net (checked exactly) or ``(F,)`` for an FC net (any input with ``F``
    values per sample); the check costs a few Python int comparisons per call. ``builder`` names what built it (in
    messages).

    Example:
        >>> from torch import nn
        >>> net = LocalisationNet(nn.Flatten(), nn.Linear(16, 8), out_features=8, in_shape=(1, 4, 4), builder="mine")
        >>> net(torch.rand(2, 1, 4, 4)).shape, net.out_features
        (torch.Size([2, 8]), 8)
    """

    def __init__(self, *layers: nn.Module, out_features: int, in_shape: tuple[int, ...], builder: str):
        super().__init__(*layers)
        self.out_features = int(out_features)
        self.in_shape = tuple(in_shape)
        self.builder = builder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # sizes are tensors there and a trace keeps no Python check: nothing to gain
            return super().forward(x)
        check_float_tensor("the localisation input", x)
        if len(self.in_shape) == 1:  # fc: flattened
            if x.dim() < 2 or math.prod(x.shape[1:]) != self.in_shape[0]:
                raise ShapeError(
                    f"{self.builder} was built for {self.in_shape[0]} input values per sample, got "
                    f"input of shape {tuple(x.shape)}"
                )
        elif x.shape[1:] != self.in_shape:
            raise ShapeError(
                f"{self.builder} was built for inputs {self.in_shape} (channels, *in_size) per sample, "
                f"got {tuple(x.shape[1:])}: build it for this shape or resize the input"
            )
        return super().forward(x)


def fc_localisation(in_features: int, hidden: Sequence[int] = (32, 32, 32)) -> nn.Sequential:
    """The paper's ST-FCN localisation net: flatten, then FC layers with ReLU (default three of 32 units).

    Args:
        in_features: values per input sample (``C * H * W``); the net refuses inputs of another size.
        hidden: the width of each FC layer.

    Raises:
        OptionError: a width that is not a positive int.
        ShapeError: (at forward) an input whose samples do not hold ``in_features`` values.

    Example:
        >>> net = fc_localisation(28 * 28)
        >>> net(torch.rand(2, 1, 28, 28)).shape, net.out_features
        (torch.Size([2, 32]), 32)
    """
    in_features = prev = check_positive_int("in_features", in_features)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        width = check_positive_int("hidden width", h)
        layers += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
        prev = width
    return LocalisationNet(
        *layers, out_features=prev, in_shape=(in_features,), builder=f"fc_localisation({in_features})"
    )


def conv_localisation(
    in_channels: int,
    in_size: Sequence[int] | int,
    *,
    channels: int = 20,
    kernel_size: int = 5,
    fc: int = 20,
    downsample: int = 2,
) -> nn.Sequential:
    """The paper's ST-CNN localisation net: the input downsampled (max-pool ``downsample``), two ``kernel_size``
    conv layers of ``channels`` filters with a 2x max-pool between them, then an FC layer of ``fc`` units; ReLU
    throughout. ``in_size`` of length 2 (or an int, a square image) builds a 2D net, of length 3 a 3D one; the net
    refuses inputs of another channel count or size.

    Every side of ``in_size`` needs at least ``downsample * (3 * kernel_size - 1)`` pixels (28 by default).

    Raises:
        ShapeError: an ``in_size`` too small for the layers (the message names the ``downsample`` / ``kernel_size``
            that fit); at forward, an input of another shape than ``(in_channels, *in_size)``.
        OptionError: a count or size that is not a positive int.

    Example:
        >>> net = conv_localisation(1, (42, 42))
        >>> net(torch.rand(2, 1, 42, 42)).shape
        torch.Size([2, 20])
    """
    rank = 2 if isinstance(in_size, int) else len(in_size) if isinstance(in_size, (tuple, list, torch.Size)) else 0
    if rank not in (2, 3):
        raise ShapeError(f"in_size must be (H, W), (D, H, W) or an int (a square image), got {in_size!r}")
    size = check_size("in_size", in_size, rank)
    in_channels, channels = check_positive_int("in_channels", in_channels), check_positive_int("channels", channels)
    kernel_size, fc = check_positive_int("kernel_size", kernel_size), check_positive_int("fc", fc)
    downsample = check_positive_int("downsample", downsample)
    _check_fits(size, kernel_size, downsample)
    Conv = {2: nn.Conv2d, 3: nn.Conv3d}[rank]
    Pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[rank]
    layers: list[nn.Module] = []
    if downsample > 1:
        layers.append(Pool(downsample))
    layers += [
        Conv(in_channels, channels, kernel_size),
        nn.ReLU(inplace=True),
        Pool(2),
        Conv(channels, channels, kernel_size),
        nn.ReLU(inplace=True),
        nn.Flatten(),
    ]
    with torch.no_grad():
        flat = nn.Sequential(*layers)(torch.zeros(1, in_channels, *size)).shape[1]
    layers += [nn.Linear(flat, fc), nn.ReLU(inplace=True)]
    return LocalisationNet(
        *layers, out_features=fc, in_shape=(in_channels, *size), builder=f"conv_localisation({in_channels}, {size})"
    )


def _min_side(kernel_size: int, downsample: int) -> int:
    """Smallest side the layers accept: after the pool, ``s - k + 1`` then halved must still be ``>= k``."""
    return downsample * (3 * kernel_size - 1)


def _check_fits(size: tuple[int, ...], kernel_size: int, downsample: int) -> None:
    side = min(size)
    if side >= _min_side(kernel_size, downsample):
        return
    fix = "; pass a larger in_size"
    if downsample > 1 and side >= _min_side(kernel_size, 1):
        fix = "; pass downsample=1 or a larger in_size"
    elif side >= _min_side(1, 1):  # downsample=1 allows the largest kernel
        k = (side + 1) // 3
        fix = f"; pass kernel_size={k}" + (" with downsample=1" if downsample > 1 else "") + " or a larger in_size"
    raise ShapeError(
        f"conv_localisation: in_size {size} is too small for its layers: with downsample={downsample} and "
        f"kernel_size={kernel_size} every side needs at least {_min_side(kernel_size, downsample)}{fix}"
    )
