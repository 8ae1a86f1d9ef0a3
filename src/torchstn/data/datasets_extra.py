"""Co-localisation (Appendix A.2) and :class:`TensorFile`, a dataset from a user's own ``.npz`` file.

Both follow the contract of :mod:`torchstn.data.datasets_base` and are fixed sets (``generator`` is ignored).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from torchstn._checks import look_up_option
from torchstn.data.datasets_base import (
    SPLITS,
    PaperDataset,
    mix_seed,
    resolve_source,
    to_float,
)
from torchstn.data.distortions_base import DIGIT
from torchstn.data.distortions_canvas import TranslateClutter
from torchstn.errors import DataError, OptionError

__all__ = ["CoLocalisation", "TensorFile"]


def _ink_boxes(ink: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``(n, 4)`` ``(x1, y1, x2, y2)`` in pixel edges of the True pixels of ``ink (n, H, W)``
    (``(W, H, 0, 0)`` for an empty image)."""
    _, H, W = ink.shape
    cols, rows = ink.any(dim=1), ink.any(dim=2)  # (n, W), (n, H)
    xs, ys = torch.arange(W), torch.arange(H)
    x1 = torch.where(cols, xs, W).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1) + 1
    y1 = torch.where(rows, ys, H).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1) + 1
    return torch.stack((x1, y1, x2, y2), dim=1)


class CoLocalisation(PaperDataset):
    """Co-localisation (Appendix A.2): ``n`` images of one digit class, each 28x28 digit at a random integer place
    on an 84x84 canvas, optionally with 16 clutter crops of 6x6 from random other digits of the split (max).

    The ``n`` digits are a seeded random choice among the split's digits of class ``digit``; placement and clutter are
    drawn once from ``seed`` (a fixed set). Items are ``(image (1, 84, 84), label, box)``.

    **Boxes.** ``boxes (n, 4)`` is the true digit box, the placed 28x28 square, as ``(x1, y1, x2, y2)`` in *pixel
    edge* coordinates (torchvision's: pixel column ``c`` covers ``[c, c + 1)``, so ``x2 - x1 = 28``);
    ``boxes_normalised (n, 4)`` is the same box in the normalised coordinates of :mod:`torchstn.coords`
    (``align_corners=False``: ``-1``/``+1`` are the canvas's outer edges, ``u = 2 x / 84 - 1``), directly comparable
    with an attention window ``(s, tx, ty)``, which covers ``[tx - s, tx + s] x [ty - s, ty + s]``. ``ink_boxes`` is
    the tight box of the digit's nonzero pixels, same pixel convention. Success in the paper is IoU > 0.5 with the
    true box.

    Args:
        digit: the class, 0..9.
        n: number of images.
        clutter: add ``n_clutter`` crops.
        seed: picks the digits and draws placement and clutter.
        split: digits (and clutter) from ``"test"`` (default: digits the frozen MNIST encoder never trained on) or
            ``"train"``.
        root, source: as :class:`~torchstn.data.datasets.DistortedMNIST`.
        canvas, n_clutter, clutter_size, subpixel: as :class:`~torchstn.data.distortions_canvas.TranslateClutter`.

    Example:
        >>> from torchstn.data.datasets_synthetic import synthetic_digits
        >>> ds = CoLocalisation(3, n=4, clutter=True, source=synthetic_digits(60))
        >>> image, label, box = ds[0]
        >>> image.shape, int(label), float(box[2] - box[0]), ds.boxes_normalised.shape
        (torch.Size([1, 84, 84]), 3, 28.0, torch.Size([4, 4]))
    """

    def __init__(self, digit: int, n: int = 100, clutter: bool = False, seed: int = 0, split: str = "test",
                 root=None, source=None, canvas: int = 84, n_clutter: int = 16, clutter_size: int = 6,
                 subpixel: bool = False):  # fmt: skip
        split = look_up_option("split", split, SPLITS)
        if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
            raise OptionError(f"digit must be an int in 0..9, got {digit!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise OptionError(f"n must be an int >= 1, got {n!r}")
        pool, pool_labels = resolve_source(split, root, source)
        candidates = (pool_labels == digit).nonzero().flatten()
        if candidates.numel() < n:
            raise DataError(f"the {split} digits hold {candidates.numel()} images of class {digit}, {n} requested")
        choose = torch.Generator().manual_seed(mix_seed(seed, digit, 0xC01))
        self.source_index = candidates[torch.randperm(candidates.numel(), generator=choose)[:n]]  # (n,) into pool
        super().__init__(pool[self.source_index], pool_labels[self.source_index], split=split, seed=seed, fixed=True,
                         fixed_seed=mix_seed(seed, digit))  # fmt: skip
        self.digit, self.clutter = digit, bool(clutter)
        self.distortion = TranslateClutter(canvas, n_clutter if clutter else 0, clutter_size, pool=pool,
                                           placement="box", subpixel=subpixel)  # fmt: skip
        self.image_shape = self.distortion.image_shape
        centre = self.fixed_params()["centre"]  # (n, 2) digit centre, pixel-centre coordinates
        top_left = centre - (DIGIT / 2 - 0.5)  # (n, 2) left / top pixel edge of the 28x28 box
        self.boxes = torch.cat((top_left, top_left + DIGIT), dim=1).float()  # (n, 4) pixel edges
        self.boxes_normalised = (2.0 * self.boxes.double() / canvas - 1.0).float()  # (n, 4)
        ink_box = _ink_boxes(self.images > 0)  # (n, 4) in the 28x28 digit
        self.ink_boxes = (ink_box.double() + top_left.repeat(1, 2)).float()

    def _options(self) -> tuple:
        return (self.digit, tuple(self.distortion.options().items()), tuple(self.source_index.tolist()))

    def _sample(self, generator, indices):
        return self.distortion.sample_params(generator, indices.numel(), exclude=self.source_index[indices])

    def _render(self, indices, params, compute_dtype):
        x = to_float(self.images[indices])
        return self.distortion.apply(x, params, compute_dtype=compute_dtype), self.labels[indices]

    def __getitem__(self, i: int):
        image, label = super().__getitem__(i)
        return image, label, self.boxes[int(i)]

    def extra_repr(self) -> str:
        return f"digit={self.digit}, clutter={self.clutter}"


class TensorFile(PaperDataset):
    """A dataset from a user's own ``.npz`` with arrays ``images`` and ``labels`` (a fixed set).

    ``images``: ``(N, H, W)`` or ``(N, C, H, W)``; uint8 is divided by 255, floating point is used as it is.
    ``labels``: integer ``(N,)``, ``>= 0``. ``num_classes`` is the argument, else an integer array ``num_classes``
    in the file, else ``labels.max() + 1``. Loaded with ``allow_pickle=False``; needs numpy.

    Args:
        path: the ``.npz`` file.
        num_classes: number of classes (optional).

    Raises:
        DataError: missing or unreadable file, missing keys, mismatched lengths, bad dtypes or shapes, labels out of
            range, non-finite images.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "mine.npz")
        >>> np.savez(path, images=np.zeros((5, 8, 8), np.uint8), labels=np.arange(5))
        >>> ds = TensorFile(path)
        >>> ds.image_shape, ds.num_classes, ds.batch(torch.tensor([0, 4]))[1].tolist()
        ((1, 8, 8), 5, [0, 4])
    """

    def __init__(self, path: str | os.PathLike[str], num_classes: int | None = None):
        from torchstn.data._download import import_numpy

        np = import_numpy("Reading a .npz file")
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        try:
            with np.load(self.path, allow_pickle=False) as f:
                arrays = {key: f[key] for key in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{self.path}: not a readable .npz file ({e})") from e
        missing = [key for key in ("images", "labels") if key not in arrays]
        if missing:
            raise DataError(f"{self.path}: missing array(s) {missing}; the file holds {sorted(arrays)}")
        images, labels = self._images(arrays["images"], np), self._labels(arrays["labels"], np)
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{self.path}: {images.shape[0]} images but {labels.shape[0]} labels")
        if num_classes is None and "num_classes" in arrays:
            num_classes = int(arrays["num_classes"])
        top = int(labels.max()) + 1 if labels.numel() else 0
        self.num_classes = top if num_classes is None else int(num_classes)
        if top > self.num_classes:
            raise DataError(f"{self.path}: labels reach {top - 1} but num_classes is {self.num_classes}")
        super().__init__(images, labels, split="train", seed=0, fixed=True)
        self.image_shape = tuple(images.shape[1:])

    def _images(self, a, np) -> torch.Tensor:
        if a.dtype == np.uint8:
            images = torch.from_numpy(a.copy()).float() / 255.0
        elif a.dtype.kind == "f":
            images = torch.from_numpy(a.astype(np.float32))
        else:
            raise DataError(f"{self.path}: images must be uint8 (0..255) or floating point, got {a.dtype}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4:
            raise DataError(f"{self.path}: images must be (N, H, W) or (N, C, H, W), got {tuple(a.shape)}")
        if not bool(torch.isfinite(images).all()):
            raise DataError(f"{self.path}: images hold NaN or infinity")
        return images

    def _labels(self, a, np) -> torch.Tensor:
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise DataError(f"{self.path}: labels must be integers of shape (N,), got {a.dtype} {tuple(a.shape)}")
        labels = torch.from_numpy(a.astype(np.int64))
        if labels.numel() and int(labels.min()) < 0:
            raise DataError(f"{self.path}: labels must be >= 0, got {int(labels.min())}")
        return labels

    def _fixed_batch(self, index):
        return self.images[index], self.labels[index]

    def extra_repr(self) -> str:
        return f"{str(self.path)!r}"
