"""The attention window of the co-localisation experiment: its coarse-to-fine scale bounds (:class:`Window`), the
regression head that keeps it inside the image (:class:`WindowHead`) and the paper's localiser (:func:`localiser`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn

from torchstn.errors import OptionError, ShapeError
from torchstn.nn import SpatialTransformer

__all__ = ["CROP", "Window", "WindowHead", "localiser"]

#: The side of the ST's output crop ``T(I)`` and of the random crops ``I^rand``: an MNIST digit.
CROP = 28


@dataclasses.dataclass(frozen=True)
class Window:
    """The attention window's scale bounds and their coarse-to-fine schedule (normalised half-sizes: 1/3 = 28 px on
    an 84 px canvas). The bounds start at ``coarse``, hold, then move linearly to ``fine`` between the fractions
    ``zoom`` of training.

    Attributes:
        start_scale: where every window starts (zero weights): the central window of this half-size.
        coarse, fine: ``(min, max)`` scale at the start and at the end.
        zoom: fractions of training between which the bounds move from ``coarse`` to ``fine``.
        antialias: sample with :func:`torchstn.sample`'s anti-aliasing (a 56 px window is read at 28 px).

    Raises:
        OptionError: bounds that are not ``0 < min < max <= 1``, a ``start_scale`` outside ``coarse``, or ``zoom``
            fractions that are not ``0 <= start <= end <= 1``.

    Example:
        >>> w = Window()
        >>> w.scale_at(0, 200), w.scale_at(130, 200), w.scale_at(200, 200)
        ((0.5, 0.67), (0.4, 0.535), (0.3, 0.4))
        >>> Window(fine=(0.4, 0.3))
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: fine must be (min, max) with 0 < min < max <= 1, got (0.4, 0.3)
    """

    start_scale: float = 0.6
    coarse: tuple[float, float] = (0.5, 0.67)
    fine: tuple[float, float] = (0.3, 0.4)
    zoom: tuple[float, float] = (0.5, 0.8)
    antialias: bool = True

    def __post_init__(self):
        for name in ("coarse", "fine"):
            lo, hi = getattr(self, name)
            if not 0 < lo < hi <= 1:
                raise OptionError(f"{name} must be (min, max) with 0 < min < max <= 1, got {getattr(self, name)}")
        if not self.coarse[0] < self.start_scale < self.coarse[1]:
            raise OptionError(f"start_scale must lie strictly inside coarse {self.coarse}, got {self.start_scale}")
        if not 0 <= self.zoom[0] <= self.zoom[1] <= 1:
            raise OptionError(f"zoom must be (start, end) fractions with 0 <= start <= end <= 1, got {self.zoom}")

    def scale_at(self, step: int, steps: int) -> tuple[float, float]:
        """The ``(min, max)`` scale bounds at iteration ``step`` of ``steps``."""
        a, b = (f * steps for f in self.zoom)
        t = min(1.0, max(0.0, (step - a) / max(b - a, 1e-9)))
        lo, hi = (round(c + t * (f - c), 12) for c, f in zip(self.coarse, self.fine))
        return lo, hi


class WindowHead(nn.Module):
    """Regression head ``features (B, F) -> theta (B, 3) = (s, tx, ty)`` of a window kept inside the image:
    ``s = lo + (hi - lo) * sigmoid(a + a0)``, ``(tx, ty) = (1 - s) * tanh(b, c)`` for the linear outputs ``(a, b, c)``.
    The linear layer starts at zero weights and bias (the paper's identity initialisation, moved to the central
    window of half-size ``start_scale``, its buffer ``identity``). The bounds ``(lo, hi)`` are the buffer ``scale``,
    which a curriculum may move (coarse to fine: :class:`Window`, applied by the co-localisation task's ``on_step``).

    Raises:
        OptionError: bounds that are not ``0 < lo < start_scale < hi <= 1``.

    Example:
        >>> head = WindowHead(8, start_scale=0.6, scale=(0.3, 0.67))
        >>> head(torch.randn(2, 8))[0]
        tensor([0.6000, 0.0000, 0.0000], grad_fn=<SelectBackward0>)
    """

    scale: torch.Tensor  # (2,) the (min, max) scale bounds: a buffer, saved with the weights
    identity: torch.Tensor  # (3,) the theta it starts at: a non-persistent buffer

    def __init__(self, in_features: int, start_scale: float = 0.6, scale: Sequence[float] = (0.3, 0.67)):
        super().__init__()
        lo, hi = (float(v) for v in scale)
        if not 0 < lo < start_scale < hi <= 1:
            raise OptionError(
                f"need 0 < min scale < start_scale < max scale <= 1, got start_scale={start_scale}, "
                f"scale={tuple(scale)}"
            )
        self.start_scale = float(start_scale)
        self.offset = math.log((start_scale - lo) / (hi - start_scale))  # sigmoid(offset) = (start - lo) / (hi - lo)
        self.register_buffer("scale", torch.tensor([lo, hi]))
        # the theta it starts at, where the engine's identity regulariser (optim.identity_weight) pulls it back to
        self.register_buffer("identity", torch.tensor([self.start_scale, 0.0, 0.0]), persistent=False)
        self.linear = nn.Linear(int(in_features), 3)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raw = self.linear(features.flatten(1))  # (B, 3)
        lo, hi = self.scale.to(raw.dtype).unbind()
        s = lo + (hi - lo) * torch.sigmoid(raw[:, :1] + self.offset)  # (B, 1)
        return torch.cat((s, (1.0 - s) * torch.tanh(raw[:, 1:])), dim=1)  # (B, 3)

    def extra_repr(self) -> str:
        return f"start_scale={self.start_scale:.4g}"


def localiser(in_size: Sequence[int] = (84, 84), window: Window = Window(), stride: int = 4) -> SpatialTransformer:
    """The paper's co-localisation ST: localisation conv 8 filters 9x9 stride ``stride`` -> max-pool 2 -> FC 8 ->
    FC 8 -> FC 3 (ReLU), attention transform, 28x28 output; the last FC is a :class:`WindowHead` with ``window``'s
    coarse bounds.

    The paper's text gives both "a 4 pixel stride" and "a 100k parameter CNN", which do not agree: on 84x84 the
    stride-4 net has 5,947 parameters (84 -> 19 -> 9 px), the stride-1 net 93,179 (84 -> 76 -> 38 px).

    Raises:
        ShapeError: an input too small for one pooled pixel.
        OptionError: a stride below 1.

    Example:
        >>> st = localiser()
        >>> crops, theta = st(torch.rand(2, 1, 84, 84), return_theta=True)
        >>> crops.shape, theta[0]
        (torch.Size([2, 1, 28, 28]), tensor([0.6000, 0.0000, 0.0000], grad_fn=<SelectBackward0>))
        >>> [sum(p.numel() for p in localiser(stride=s).parameters()) for s in (4, 1)]
        [5947, 93179]
    """
    if int(stride) < 1:
        raise OptionError(f"the localiser's stride must be >= 1, got {stride}")
    stride = int(stride)
    H, W = (int(s) for s in in_size)
    h, w = ((H - 9) // stride + 1) // 2, ((W - 9) // stride + 1) // 2
    if H < 9 or W < 9 or h < 1 or w < 1:
        raise ShapeError(
            f"the co-localisation localiser (stride {stride}) needs inputs of at least {9 + stride}x{9 + stride}, "
            f"got {H}x{W}"
        )
    loc = nn.Sequential(
        nn.Conv2d(1, 8, 9, stride=stride),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),  # (B, 8 * h * w)
        nn.Linear(8 * h * w, 8),
        nn.ReLU(inplace=True),
        nn.Linear(8, 8),
        nn.ReLU(inplace=True),
    )
    return SpatialTransformer(
        loc,
        "attention",
        out_size=(CROP, CROP),
        antialias=window.antialias,
        head=WindowHead(8, window.start_scale, window.coarse),
    )
