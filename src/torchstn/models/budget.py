"""Parameter budgets: count a network's parameters cheaply and solve a width so a model's total is closest to a target.

The paper matches parameter counts per experiment without giving widths; :mod:`torchstn.models.mnist` and
:mod:`torchstn.models.volume` fit their classifier widths to :func:`reference_budget` with :func:`fit_width`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from torchstn.errors import OptionError
from torchstn.models.classifiers import cnn_classifier
from torchstn.models.registry import count_parameters

__all__ = ["reference_budget", "fit_width", "meta_parameter_count", "check_widths", "REFERENCE_CHANNELS", "MIN_WIDTH"]

#: The channels of the reference CNN whose parameter count is an experiment's budget.
REFERENCE_CHANNELS = (64, 64)
#: The narrowest width :func:`fit_width` tries.
MIN_WIDTH = 4


def meta_parameter_count(make: Callable[[], nn.Module]) -> int:
    """The parameter count of the module ``make()`` builds, built on the meta device (shapes only: no memory, no
    initialisation), so width searches can try many sizes cheaply.

    Example:
        >>> meta_parameter_count(lambda: nn.Linear(1000, 1000))
        1001000
    """
    with torch.device("meta"):
        return count_parameters(make())


def reference_budget(in_shape: Sequence[int], num_classes: int = 10) -> int:
    """The parameter budget of an experiment: the count of the 64/64-channel CNN on ``in_shape``.

    Example:
        >>> reference_budget((1, 28, 28)), reference_budget((1, 60, 60))
        (237386, 350026)
    """
    C, H, W = in_shape
    return meta_parameter_count(lambda: cnn_classifier(C, (H, W), REFERENCE_CHANNELS, num_classes))


def fit_width(count: Callable[[int], int], target: int, *, min_width: int = MIN_WIDTH, max_width: int = 1 << 14) -> int:
    """The width ``w`` in ``[min_width, max_width]`` whose ``count(w)`` (increasing in ``w``) is closest to
    ``target``; ``min_width`` when even that exceeds the target.

    Example:
        >>> fit_width(lambda w: 10 * w, 1234)
        123
    """
    lo, hi = min_width, max_width
    while lo < hi:  # smallest w with count(w) >= target
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    if lo > min_width and abs(count(lo - 1) - target) <= abs(count(lo) - target):
        return lo - 1
    return lo


def check_widths(name: str, widths: object) -> tuple[int, int]:
    """Require two positive ints (a classifier's ``hidden`` / ``channels`` option ``name``).

    Raises:
        OptionError: anything else.
    """
    if (
        isinstance(widths, Sequence)
        and len(widths) == 2
        and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
    ):
        return int(widths[0]), int(widths[1])
    raise OptionError(f"{name} must be two positive ints, got {widths!r}")
