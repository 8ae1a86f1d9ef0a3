"""SVHN house numbers (paper §4.2), reading the cache: a split written by
:func:`~torchstn.experiments.svhn.prepare.prepare_svhn` (:func:`load_svhn`) and the training engine's dataset over it
(:class:`SVHNSequences`: the whole 64px / 128px crops, or random / central ``crop x crop`` windows). How the release is
read and the crops are made: :mod:`torchstn.experiments.svhn.prepare` (its names are importable from here too).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from torchstn.errors import DataError, OptionError
from torchstn.experiments.svhn.prepare import (
    FORMAT,
    MAX_DIGITS,
    NULL_CLASS,
    SVHNRecord,
    crop_box,
    crop_resize,
    encode_sequence,
    prepare_svhn,
    read_digit_struct,
    read_split,
)

__all__ = [
    "load_svhn",
    "SVHNData",
    "SVHNSequences",
    # made by prepare, importable from here as before:
    "prepare_svhn",
    "read_split",
    "read_digit_struct",
    "SVHNRecord",
    "crop_box",
    "crop_resize",
    "encode_sequence",
    "MAX_DIGITS",
    "NULL_CLASS",
]


@dataclasses.dataclass(frozen=True)
class SVHNData:
    """One cached split: ``images (N, 3, S, S)`` uint8, ``labels (N, 5)`` int64 (null class 10), ``lengths (N,)``,
    and the training set's per-channel ``mean`` / ``std`` ``(3,)`` in [0, 1] units."""

    images: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_svhn(data_dir: str | os.PathLike[str], split: str = "train", size: int = 64, *, mmap: bool = True) -> SVHNData:
    """Read ``svhn{size}_{split}.pt`` written by :func:`prepare_svhn` (``weights_only=True``; memory-mapped by
    default, so a large train split is paged in as used).

    Raises:
        DataError: the file is missing (the message says how to make it) or not a torchstn SVHN cache.
    """
    if split not in ("train", "val", "test"):
        raise OptionError(f"split must be one of ['train', 'val', 'test'], got {split!r}")
    path = Path(data_dir) / f"svhn{size}_{split}.pt"
    if not path.is_file():
        raise DataError(
            f"{path}: missing; make it with `torchstn svhn prepare --src <SVHN folder> "
            f"--out {data_dir} --size {size}` (torchstn.experiments.svhn.data.prepare_svhn)"
        )
    try:
        d = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} file")
    return SVHNData(d["images"], d["labels"], d["lengths"], d["mean"], d["std"], list(d["names"]))


class SVHNSequences(torch.utils.data.Dataset):
    """``(image (3, S', S') float normalised, labels (5,) int64)`` pairs from a cached split. It follows the training
    engine's dataset contract: ``image_shape``, ``num_classes`` (per head: the digits and the null class), ``len()``
    and ``batch(indices, generator)``.

    Args:
        data: a split from :func:`load_svhn`.
        crop: ``None`` keeps the whole ``S x S`` image; an int takes a random ``crop x crop`` window when ``train``
            (Goodfellow et al.: 54 of 64) and the central one otherwise.
        train: random (``True``) or central crops.
        generator: the random source of the crops.
    """

    num_classes = NULL_CLASS + 1

    def __init__(
        self, data: SVHNData, *, crop: int | None = None, train: bool = False, generator: torch.Generator | None = None
    ):
        S = data.images.shape[-1]
        if crop is not None and not 0 < int(crop) <= S:
            raise OptionError(f"crop must be in 1..{S}, got {crop!r}")
        self.data, self.crop, self.train, self.generator = data, crop, bool(train), generator

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(3, S', S')``: the cached size, or the crop."""
        side = int(self.crop or self.data.images.shape[-1])
        return (int(self.data.images.shape[1]), side, side)

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch at once: ``(B, 3, S', S')`` and ``(B, 5)`` (faster than the DataLoader on cached tensors);
        random crops (one position per image) come from ``generator`` (default: the dataset's)."""
        x = self.data.images[index].float().div_(255)  # (B, 3, S, S)
        if self.crop is not None:
            B, S, c = x.shape[0], x.shape[-1], int(self.crop)
            if self.train:
                g = generator if generator is not None else self.generator
                oy, ox = torch.randint(0, S - c + 1, (2, B, 1), generator=g)  # (B, 1) each
            else:
                oy = ox = torch.full((B, 1), (S - c) // 2)
            rows, cols = oy + torch.arange(c), ox + torch.arange(c)  # (B, c)
            b = torch.arange(B).view(B, 1, 1)
            x = x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, 3, c, c)
        x = (x - self.data.mean.view(1, 3, 1, 1)) / self.data.std.view(1, 3, 1, 1)
        return x, self.data.labels[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch(torch.tensor([i]))
        return x[0], y[0]
