"""A picture of a dataset: a grid of samples of its fixed test set (``torchstn data show NAME --out FILE``).

matplotlib is imported lazily (``pip install torchstn[experiments]``); no pyplot state is touched.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from torchstn._checks import look_up_option
from torchstn.errors import OptionError

__all__ = ["save_samples_figure", "NAMES"]

#: Dataset names :func:`save_samples_figure` accepts (case-insensitive).
NAMES = ("plain", "r", "rts", "p", "e", "tc", "addition", "colocalisation", "3d")
_COLS = 8
_COLOC_DIGIT = 4


def _build(name: str, root, source):
    from torchstn.data.datasets import DistortedMNIST, MNISTAddition, Volume3D

    if name == "addition":
        return MNISTAddition(split="test", root=root, source=source)
    if name == "3d":
        return Volume3D(split="test", root=root, source=source)
    return DistortedMNIST(name, split="test", root=root, source=source)


def _panels(name: str, n: int, seed: int, root, source):
    """``(images (k, H, W) in [0, 1], titles, boxes (k, 4) or None)`` for ``k <= n`` samples."""
    if name == "colocalisation":
        from torchstn.data.contract import resolve_source
        from torchstn.data.datasets import CoLocalisation

        digits = resolve_source("test", root, source)
        count = int((digits[1] == _COLOC_DIGIT).sum())  # a small source may hold fewer than n of the class
        ds = CoLocalisation(_COLOC_DIGIT, n=min(n, count), clutter=True, seed=seed, source=digits)
        images, _ = ds.batch(torch.arange(len(ds)))
        return images[:, 0], [f"digit {_COLOC_DIGIT}"] * len(ds), ds.boxes
    ds = _build(name, root, source)
    index = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[: min(n, len(ds))]
    images, labels = ds.batch(index)
    if name == "addition":  # the two channels side by side, one blank column between them
        gap = images.new_zeros(images.shape[0], images.shape[2], 2)
        panels = torch.cat((images[:, 0], gap, images[:, 1]), dim=2)
        return panels, [f"sum {int(y)}" for y in labels], None
    if name == "3d":  # maximum over depth: what a depth projection of the volume shows
        return images[:, 0].amax(dim=1), [f"{int(y)} (max over D)" for y in labels], None
    return images[:, 0], [str(int(y)) for y in labels], None


def save_samples_figure(
    name: str,
    out: str | os.PathLike[str],
    n: int = 32,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    source=None,
) -> Path:
    """Save a grid of ``n`` samples of a dataset's fixed test set to an image file (format from the suffix).

    Args:
        name: ``"plain"``, ``"r"``, ``"rts"``, ``"p"``, ``"e"``, ``"tc"``, ``"addition"`` (both channels side by
            side, titled with the sum), ``"colocalisation"`` (digit 4 with clutter, true boxes drawn) or ``"3d"``
            (maximum over depth); case-insensitive.
        out: the file to write (``.png``, ``.pdf``, ``.svg``, ...); its directory is created.
        n: number of samples.
        seed: which samples are shown (a random choice of the test set; for co-localisation, its seed).
        root: directory of the MNIST files (see :func:`torchstn.data.mnist.load_mnist`).
        source: as the dataset classes: ``None`` (MNIST, fetched if needed), a source name such as ``"local"``, or
            ``(images, labels)`` digits.

    Returns:
        The path written.

    Raises:
        OptionError: unknown ``name`` (with a suggestion), ``n`` below 1, or an ``out`` suffix that names no image
            format matplotlib writes (checked before any data is loaded).
        ModuleNotFoundError: matplotlib is not installed.

    Example:
        >>> import tempfile, os
        >>> from torchstn.data.synthetic import synthetic_digits
        >>> out = os.path.join(tempfile.mkdtemp(), "rts.png")
        >>> save_samples_figure("rts", out, n=4, source=synthetic_digits(16)).stat().st_size > 0
        True
    """
    name = look_up_option("name", name.lower() if isinstance(name, str) else name, NAMES)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(f"n must be a positive int, got {n!r}")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError as e:
        raise ModuleNotFoundError("save_samples_figure needs matplotlib: `pip install matplotlib`.") from e
    from torchstn.experiments.viz import check_figure_path

    out = check_figure_path(out)
    images, titles, boxes = _panels(name, n, seed, root, source)
    k = images.shape[0]
    cols = min(_COLS, k)
    rows = max(1, math.ceil(k / cols))
    aspect = images.shape[2] / images.shape[1]
    fig = Figure(figsize=(1.1 * cols * aspect, 1.25 * rows), dpi=80)
    FigureCanvasAgg(fig)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i >= k:
            continue
        ax.imshow(images[i].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if boxes is not None:
            x1, y1, x2, y2 = boxes[i].tolist()  # pixel edges; imshow puts pixel centres at integers
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="red", lw=1))
        ax.set_title(titles[i], fontsize=7)
    fig.suptitle(f"{name} (test set)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
