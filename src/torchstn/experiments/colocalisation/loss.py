"""The co-localisation loss (paper Appendix A.2): the triplet hinge over every ordered pair of a set, and the random
crops ``I^rand`` whose encodings are its negatives.
"""

from __future__ import annotations

import torch

from torchstn._checks import look_up_option
from torchstn.errors import ShapeError
from torchstn.experiments.colocalisation.window import CROP

__all__ = [
    "triplet_loss",
    "colocalisation_loss",
    "misordered_triplets",
    "random_crops",
    "random_pairs",
    "random_windows",
]


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, alpha: float = 1.0, reduction: str = "sum"
) -> torch.Tensor:
    """The triplet hinge ``max(0, |anchor - positive|^2 - |anchor - negative|^2 + alpha)`` over the last dim.

    Args:
        anchor, positive, negative: features ``(..., F)``, broadcast against each other.
        alpha: the margin.
        reduction: ``"sum"`` (the paper), ``"mean"`` or ``"none"`` (shape ``(...)``).

    Raises:
        OptionError: an unknown ``reduction``.

    Example:
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
        >>> triplet_loss(a, p, n), triplet_loss(a, n, p)  # 1 - 9 + 1 -> 0; 9 - 1 + 1
        (tensor(0.), tensor(9.))
    """
    look_up_option("reduction", reduction, ("sum", "mean", "none"))
    d_pos = (anchor - positive).pow(2).sum(-1)
    d_neg = (anchor - negative).pow(2).sum(-1)
    loss = (d_pos - d_neg + alpha).clamp_min(0.0)
    return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss


def colocalisation_loss(
    features: torch.Tensor, rand_features: torch.Tensor, alpha: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """The paper's co-localisation loss: :func:`triplet_loss` with anchor ``e(T(I_n))``, positive ``e(T(I_m))`` and
    negative ``e(I_n^rand)`` for every ordered pair ``n != m`` of the set.

    Args:
        features: ``(N, F)`` encodings of the ST crops ``e(T(I_n))``.
        rand_features: ``(N, F)`` encodings of the random crops ``e(I_n^rand)``.
        reduction: ``"sum"`` over the ``N (N - 1)`` triplets (the paper), ``"mean"`` over them, or ``"none"``: the
            ``(N, N)`` matrix of the terms, row ``n`` the anchor, column ``m`` the positive, zero on the diagonal.

    Raises:
        ShapeError: shapes that are not two equal ``(N, F)`` with ``N >= 2``.
        OptionError: an unknown ``reduction``.

    Example:
        >>> f, r = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [1.0]])
        >>> colocalisation_loss(f, r, reduction="sum")  # n=0: 1 - 9 + 1 -> 0; n=1: 1 - 0 + 1 = 2
        tensor(2.)
        >>> colocalisation_loss(f, r, reduction="none")
        tensor([[0., 0.],
                [2., 0.]])
    """
    look_up_option("reduction", reduction, ("sum", "mean", "none"))
    if features.dim() != 2 or features.shape != rand_features.shape or features.shape[0] < 2:
        raise ShapeError(
            f"features and rand_features must both be (N, F) with N >= 2, got "
            f"{tuple(features.shape)} and {tuple(rand_features.shape)}"
        )
    N = features.shape[0]
    sq = features.pow(2).sum(-1)  # (N,)
    d_pos = (sq[:, None] + sq[None, :] - 2.0 * features @ features.T).clamp_min(0.0)  # (N, N): |f_n - f_m|^2
    d_neg = (features - rand_features).pow(2).sum(-1)  # (N,)
    hinge = (d_pos - d_neg[:, None] + alpha).clamp_min(0.0)  # (N, N), row n = anchor n
    off_diagonal = ~torch.eye(N, dtype=torch.bool, device=features.device)
    if reduction == "none":
        return hinge * off_diagonal
    total = hinge[off_diagonal].sum()
    return total if reduction == "sum" else total / (N * (N - 1))


def misordered_triplets(features: torch.Tensor, rand_features: torch.Tensor) -> torch.Tensor:
    """For each anchor ``n``, the share of its ``N - 1`` triplets in the wrong order: the positive ``e(T(I_m))``
    farther from the anchor than its negative ``e(I_n^rand)`` (the term above the margin ``alpha``): ``(N,)`` in
    ``[0, 1]``. An anchor with most of its triplets misordered is a training mistake of the co-localisation task.

    Example:
        >>> f, r = torch.tensor([[0.0], [1.0], [0.6]]), torch.tensor([[3.0], [1.0], [0.1]])
        >>> misordered_triplets(f, r)  # 0: its random crop is far; 1: on it; 2: farther than crop 1, nearer than 0
        tensor([0.0000, 1.0000, 0.5000])
    """
    beyond_margin = colocalisation_loss(features, rand_features, alpha=0.0, reduction="none")  # max(0, d_pos - d_neg)
    return (beyond_margin > 0).sum(1).to(features.dtype) / (features.shape[0] - 1)


def random_crops(images: torch.Tensor, generator: torch.Generator, size: int = CROP) -> torch.Tensor:
    """One uniformly placed ``size x size`` crop of each image ``(N, C, H, W) -> (N, C, size, size)`` (whole pixels,
    inside the image): the paper's ``I^rand``. The places are drawn from ``generator`` (on the CPU).

    Raises:
        ShapeError: a crop larger than the images.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> random_crops(x, torch.Generator().manual_seed(0), size=3).shape
        torch.Size([1, 1, 3, 3])
    """
    N, _, H, W = images.shape
    if size > H or size > W:
        raise ShapeError(f"crop size {size} exceeds the images' {H}x{W}")
    y0 = torch.randint(0, H - size + 1, (N,), generator=generator)
    x0 = torch.randint(0, W - size + 1, (N,), generator=generator)
    step = torch.arange(size)
    rows, cols = (y0[:, None] + step).to(images.device), (x0[:, None] + step).to(images.device)  # (N, size)
    index = torch.arange(N, device=images.device)[:, None, None]
    crops = images.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (N, size, size, C)
    return crops.permute(0, 3, 1, 2)


def random_pairs(n: int, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` ordered pairs ``(anchor, positive)`` of distinct items of ``0..n-1``, each uniform over the
    ``n (n - 1)`` ordered pairs and drawn independently (with replacement) from ``generator``: the paper's "randomly
    sampling image pairs (n, m)".

    Raises:
        ShapeError: ``n < 2`` or ``count < 1``.

    Example:
        >>> a, p = random_pairs(5, 1000, torch.Generator().manual_seed(0))
        >>> bool((a != p).all()), sorted(set(a.tolist())) == list(range(5)), a.shape
        (True, True, torch.Size([1000]))
    """
    if n < 2 or count < 1:
        raise ShapeError(f"need n >= 2 items and count >= 1 pairs, got n={n}, count={count}")
    anchor = torch.randint(0, n, (count,), generator=generator)
    other = torch.randint(0, n - 1, (count,), generator=generator)
    return anchor, other + (other >= anchor).long()  # skips the anchor itself: uniform over the other n - 1


def random_windows(theta: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
    """Attention windows ``(s, tx, ty)`` of the scales of ``theta (N, 3)`` at the ``places (N, 2)`` in ``[-1, 1]``
    (-1: touching the left / top edge, 1: the right / bottom one), so they stay inside the image: the window-sized
    ``I^rand`` (``task.rand_size = "window"``), read like ``T(I)``.

    Raises:
        ShapeError: shapes that are not ``(N, 3)`` and ``(N, 2)``.

    Example:
        >>> random_windows(torch.tensor([[0.5, 0.1, 0.2]]), torch.tensor([[1.0, -0.5]]))
        tensor([[ 0.5000,  0.5000, -0.2500]])
    """
    if theta.dim() != 2 or theta.shape[1] != 3 or places.shape != (theta.shape[0], 2):
        raise ShapeError(f"need theta (N, 3) and places (N, 2), got {tuple(theta.shape)} and {tuple(places.shape)}")
    s = theta[:, :1]
    return torch.cat((s, (1.0 - s) * places.to(theta.dtype)), dim=1)
