"""Synthetic seven-segment "digits": MNIST-shaped data for tests, doctests and examples, no download needed."""

from __future__ import annotations

import torch

from torchstn.errors import OptionError

__all__ = ["synthetic_digits", "SEGMENTS"]

#: Lit segments of each digit class; segments ``a``..``g`` as on a seven-segment display.
SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg")

# Segment end points (x, y) in pixels of a 28x28 image, before the per-image jitter: an 8 x 14 glyph centred at 13.5.
_X0, _X1, _Y0, _YM, _Y1 = 9.5, 17.5, 6.5, 13.5, 20.5
_ENDS = {
    "a": ((_X0, _Y0), (_X1, _Y0)),
    "b": ((_X1, _Y0), (_X1, _YM)),
    "c": ((_X1, _YM), (_X1, _Y1)),
    "d": ((_X0, _Y1), (_X1, _Y1)),
    "e": ((_X0, _YM), (_X0, _Y1)),
    "f": ((_X0, _Y0), (_X0, _YM)),
    "g": ((_X0, _YM), (_X1, _YM)),
}
_CHUNK = 1024


def _render(ends: torch.Tensor, lit: torch.Tensor, thickness: torch.Tensor) -> torch.Tensor:
    """Anti-aliased strokes: ``ends (N, 7, 2, 2)``, ``lit (N, 7)`` bool, ``thickness (N,)`` -> ``(N, 28, 28)`` in
    [0, 1]."""
    N = ends.shape[0]
    r = torch.arange(28, dtype=torch.float32)
    pix = torch.stack(torch.meshgrid(r, r, indexing="xy"), dim=-1).view(1, 1, 784, 2)  # (1, 1, P, 2) as (x, y)
    a, b = ends[:, :, 0].unsqueeze(2), ends[:, :, 1].unsqueeze(2)  # (N, 7, 1, 2)
    ab = b - a
    t = (((pix - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0.0, 1.0)  # (N, 7, P)
    dist = (pix - (a + t.unsqueeze(-1) * ab)).norm(dim=-1)  # (N, 7, P)
    ink = (thickness.view(N, 1, 1) / 2 + 0.5 - dist).clamp(0.0, 1.0) * lit.unsqueeze(-1)  # (N, 7, P)
    return ink.amax(dim=1).view(N, 28, 28)


def synthetic_digits(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic seven-segment digits shaped like MNIST: ``(images uint8 (n, 28, 28), labels int64 (n,))``.

    Labels cycle through 0..9 in a seeded random order (every class appears ``n // 10`` or ``n // 10 + 1`` times).
    Each glyph gets a random slant, size, offset and stroke width; its ink stays inside the central 20x20 box, as
    MNIST's does. Deterministic for a given ``(n, seed)``. Use them wherever real MNIST is not needed: every dataset
    class takes ``source=synthetic_digits(...)``.

    Args:
        n: number of images.
        seed: seed of the generator.

    Returns:
        ``(images, labels)`` like :func:`torchstn.data.mnist.load_mnist`.

    Example:
        >>> images, labels = synthetic_digits(20, seed=1)
        >>> images.shape, images.dtype, labels.shape, sorted(set(labels.tolist())) == list(range(10))
        (torch.Size([20, 28, 28]), torch.uint8, torch.Size([20]), True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise OptionError(f"n must be an int >= 0, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    jitter = torch.rand(n, 5, generator=g)  # slant, size, dx, dy, thickness
    slant = (jitter[:, 0] - 0.5) * 0.5  # x += slant * (13.5 - y)
    size = 0.85 + 0.25 * jitter[:, 1]
    offset = (jitter[:, 2:4] - 0.5) * 2.0  # (n, 2) px
    thickness = 1.5 + 1.0 * jitter[:, 4]
    names = "abcdefg"
    lit = torch.tensor([[seg in SEGMENTS[d] for seg in names] for d in range(10)])[labels]  # (n, 7)
    ends = torch.tensor([_ENDS[s] for s in names], dtype=torch.float32)  # (7, 2, 2)
    rel = ends - 13.5  # about the image centre
    x = rel[..., 0] * size.view(n, 1, 1) - slant.view(n, 1, 1) * rel[..., 1] * size.view(n, 1, 1)
    y = rel[..., 1] * size.view(n, 1, 1)
    glyph = torch.stack((x, y), dim=-1) + 13.5 + offset.view(n, 1, 1, 2)  # (n, 7, 2, 2)
    out = torch.empty(n, 28, 28, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):  # chunks bound the (chunk, 7, 784) temporaries
        sl = slice(start, start + _CHUNK)
        out[sl] = (_render(glyph[sl], lit[sl], thickness[sl]) * 255.0).round().to(torch.uint8)
    return out, labels
