"""A dataset from a user's own ``.npz`` file (:class:`TensorFile`), following the contract of
:mod:`torchstn.data.contract` as a fixed set (``generator`` is ignored)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from torchstn.data._download import import_numpy
from torchstn.data.contract import PaperDataset
from torchstn.errors import DataError

__all__ = ["TensorFile"]


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
