"""The paper's two MNIST classification networks (§4.1, Appendix A), without a spatial transformer.

- **FCN**: flatten, FC ``h1``, FC ``h2``, FC ``num_classes`` (ReLU between).
- **CNN**: conv 9x9 (``c1``) -> max-pool 2 -> conv 7x7 (``c2``) -> max-pool 2 -> FC ``num_classes``; 'same' padding.

:mod:`torchstn.models.mnist` puts them behind a spatial transformer; :mod:`torchstn.models.budget` fits their widths.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from torchstn.errors import ShapeError
from torchstn.nn.conv import FewChannelConv2d

__all__ = ["fcn_classifier", "cnn_classifier"]


def fcn_classifier(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """The FCN: flatten ``(B, ...) -> (B, in_features)``, two hidden FC layers with ReLU, FC to logits.

    Example:
        >>> import torch
        >>> fcn_classifier(28 * 28, (256, 200), 10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    h1, h2 = (int(h) for h in hidden)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(int(in_features), h1),
        nn.ReLU(inplace=True),
        nn.Linear(h1, h2),
        nn.ReLU(inplace=True),
        nn.Linear(h2, num_classes),
    )


def cnn_classifier(
    in_channels: int, in_size: Sequence[int], channels: Sequence[int], num_classes: int
) -> nn.Sequential:
    """The CNN: conv 9x9 -> ReLU -> max-pool 2 -> conv 7x7 -> ReLU -> max-pool 2 -> FC to logits ('same' padding).

    The first conv is a :class:`~torchstn.nn.FewChannelConv2d` (the state dict of an ``nn.Conv2d``): behind a spatial
    transformer its input gradient flows back into the transformer every step, and for 1-3 input channels that
    class computes it several times faster than the native kernel.

    Raises:
        ShapeError: ``in_size`` below 4x4 (nothing left after the two pools).

    Example:
        >>> import torch
        >>> cnn_classifier(1, (42, 42), (64, 64), 10)(torch.rand(2, 1, 42, 42)).shape
        torch.Size([2, 10])
    """
    H, W = (int(s) for s in in_size)
    if H < 4 or W < 4:
        raise ShapeError(f"the CNN needs inputs of at least 4x4 (two 2x pools), got {H}x{W}")
    c1, c2 = (int(c) for c in channels)
    return nn.Sequential(
        FewChannelConv2d(in_channels, c1, 9, padding=4),  # behind an ST its input gradient is needed: fast path
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 7, padding=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),  # (B, c2 * (H // 4) * (W // 4))
        nn.Linear(c2 * (H // 4) * (W // 4), num_classes),
    )
