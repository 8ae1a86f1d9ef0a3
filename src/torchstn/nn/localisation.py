"""Builders for the paper's localisation networks (2D and 3D by the rank of ``in_size``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchstn._checks import check_size
from torchstn.errors import ShapeError

__all__ = ["fc_localisation", "conv_localisation"]


class _Localisation(nn.Sequential):
    """A Sequential that records its output feature count (read by SpatialTransformer)."""

    def __init__(self, *layers: nn.Module, out_features: int):
        super().__init__(*layers)
        self.out_features = int(out_features)


def fc_localisation(in_features: int, hidden: Sequence[int] = (32, 32, 32)) -> nn.Sequential:
    """The paper's ST-FCN localisation net: flatten, then FC layers with ReLU (default three of 32 units).

    Example:
        >>> net = fc_localisation(28 * 28)
        >>> net(torch.rand(2, 1, 28, 28)).shape, net.out_features
        (torch.Size([2, 32]), 32)
    """
    layers: list[nn.Module] = [nn.Flatten()]
    prev = int(in_features)
    for h in hidden:
        layers += [nn.Linear(prev, int(h)), nn.ReLU(inplace=True)]
        prev = int(h)
    return _Localisation(*layers, out_features=prev)


def conv_localisation(
    in_channels: int,
    in_size: Sequence[int],
    *,
    channels: int = 20,
    kernel_size: int = 5,
    fc: int = 20,
    downsample: int = 2,
) -> nn.Sequential:
    """The paper's ST-CNN localisation net: the input downsampled (max-pool ``downsample``), two ``kernel_size``
    conv layers of ``channels`` filters with a 2x max-pool between them, then an FC layer of ``fc`` units; ReLU
    throughout. ``in_size`` of length 2 builds a 2D net, of length 3 a 3D one.

    Raises:
        ShapeError: an input too small for the layers.

    Example:
        >>> net = conv_localisation(1, (42, 42))
        >>> net(torch.rand(2, 1, 42, 42)).shape
        torch.Size([2, 20])
    """
    rank = len(in_size)
    size = check_size("in_size", tuple(in_size), rank)
    Conv = {2: nn.Conv2d, 3: nn.Conv3d}[rank]
    Pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[rank]
    layers: list[nn.Module] = []
    if downsample > 1:
        layers.append(Pool(downsample))
    layers += [
        Conv(in_channels, channels, kernel_size), nn.ReLU(inplace=True), Pool(2),
        Conv(channels, channels, kernel_size), nn.ReLU(inplace=True), nn.Flatten(),
    ]
    with torch.no_grad():
        probe = torch.zeros(1, in_channels, *size)
        try:
            flat = nn.Sequential(*layers)(probe).shape[1]
        except RuntimeError as exc:
            raise ShapeError(f"conv_localisation: input size {size} is too small for its layers ({exc})") from None
    layers += [nn.Linear(flat, fc), nn.ReLU(inplace=True)]
    return _Localisation(*layers, out_features=fc)
