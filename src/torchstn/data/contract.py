"""The dataset contract shared by every torchstn dataset, and the fixed-set machinery (seeds, in-memory cache).

The contract the trainer relies on:

* attributes ``image_shape`` (``(C, H, W)`` or ``(C, D, H, W)``), ``num_classes`` and ``len()``;
* ``batch(indices, generator=None) -> (images float32 (B, *image_shape), labels int64 (B,))``. A re-distorting set
  (the default for ``split="train"``) draws fresh distortions from ``generator`` on every call (``None``: an internal
  generator seeded from ``seed``); a fixed set (``split="test"`` always, or ``fixed=True``) returns its stored images
  and ignores ``generator``;
* ``__getitem__(i) -> (image, label)`` for DataLoader users: re-distorting sets seed one generator per item from
  ``(seed, epoch, i)``; call ``set_epoch(epoch)`` at the start of each epoch.

**Fixed sets.** The parameters of all ``N`` items are drawn in one ``sample_params`` call from
``torch.Generator().manual_seed(fixed_seed)`` (:data:`TEST_SEED` for the test split, whatever ``seed`` is; ``seed``
for ``fixed=True`` training sets) and rendered in float64, rounded once to float32: the bytes are the same on every
CPU and run (see :mod:`torchstn.data.distortions.distortion`). Sets up to :data:`MAX_STORED_BYTES` are rendered once and
kept in a per-process cache keyed by the class, its options and a SHA-256 of the source digits, so a second
construction is instant; larger ones (3D volumes) keep only their parameters and render the same bytes on demand.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch.utils.data import Dataset

from torchstn._checks import look_up_option
from torchstn.data.distortions.distortion import DIGIT, select_params
from torchstn.errors import DataError, OptionError, ShapeError

__all__ = [
    "PaperDataset",
    "TEST_SEED",
    "MAX_STORED_BYTES",
    "SPLITS",
    "mix_seed",
    "resolve_source",
    "check_digits",
    "to_float",
    "clear_cache",
]

#: Seed of every fixed test set: 2015-06-05, the day the paper appeared on arXiv (1506.02025).
TEST_SEED = 20150605
#: Fixed sets larger than this (as float32) are not stored but rendered on demand from their stored parameters.
MAX_STORED_BYTES = 1 << 30
SPLITS = ("train", "test")
_RENDER_CHUNK = 1024
_CACHE: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
_CACHE_ENTRIES = 4
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """A 63-bit seed mixing integers with splitmix64 (the per-item seed of ``(seed, epoch, index)``).

    Example:
        >>> mix_seed(0, 0, 1) != mix_seed(0, 1, 0), mix_seed(0, 0, 1) == mix_seed(0, 0, 1)
        (True, True)
    """
    h = 0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def clear_cache() -> None:
    """Forget every fixed set rendered in this process."""
    _CACHE.clear()


def check_digits(images: object, labels: object, *, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate injected digits: ``images`` uint8 (0..255) or float (0..1) ``(N, 28, 28)`` or ``(N, 1, 28, 28)``,
    ``labels`` integer ``(N,)`` in ``[0, num_classes)``. Returns ``(images (N, 28, 28), labels int64 (N,))``."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DataError(
            f"source must be (images, labels) tensors, got ({type(images).__name__}, {type(labels).__name__})"
        )
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or tuple(images.shape[1:]) != (DIGIT, DIGIT):
        raise DataError(f"source images must be (N, 28, 28) or (N, 1, 28, 28), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise DataError(f"source images must be uint8 (0..255) or float (0..1), got {images.dtype}")
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise DataError(f"source labels must be integers of shape (N,), got {labels.dtype} {tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"source holds {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"source labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    return images, labels.long()


def resolve_source(split: str, root, source) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits of ``split``: ``source`` ``None``/``"auto"``/``"local"``/``"registry"``/``"mirrors"`` loads MNIST with
    :func:`torchstn.data.mnist.load_mnist` (from ``root``); a pair ``(images, labels)`` is used as given."""
    if source is None or isinstance(source, str):
        from torchstn.data.mnist import load_mnist

        return check_digits(*load_mnist(split, root=root, source=source or "auto"))
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return check_digits(*source)
    raise DataError(f"source must be None, an MNIST source name or (images, labels), got {type(source).__name__}")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``(B, 28, 28)`` uint8 or float digits -> float32 ``(B, 1, 28, 28)`` in [0, 1] (uint8 / 255)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x.unsqueeze(1)


def fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 over the dtypes, shapes and bytes of ``tensors`` (a cache key for the source digits)."""
    h = hashlib.sha256()
    for t in tensors:
        flat = t.detach().cpu().contiguous().view(-1).view(torch.uint8)  # raw bytes, native byte order
        buf = bytearray(flat.numel())
        if buf:
            torch.frombuffer(buf, dtype=torch.uint8).copy_(flat)
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(buf)
    return h.hexdigest()


class PaperDataset(Dataset):
    """Base of the paper's datasets: implements the contract above on top of two methods of the subclass,
    ``_sample(generator, indices) -> params`` (one set per index, drawn in a fixed order) and
    ``_render(indices, params, compute_dtype) -> (images, labels)``."""

    image_shape: tuple[int, ...] = (1, DIGIT, DIGIT)
    num_classes: int = 10

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        split: str,
        seed: int,
        fixed: bool | None,
        fixed_seed: int | None = None,
    ):
        self.split = look_up_option("split", split, SPLITS)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise OptionError(f"seed must be an int, got {seed!r}")
        if self.split == "test" and fixed is False:
            raise OptionError("the test split is always fixed (distorted once with TEST_SEED); use split='train'")
        self.fixed = True if self.split == "test" else bool(fixed)
        self.seed = seed
        self.fixed_seed = fixed_seed if fixed_seed is not None else (TEST_SEED if self.split == "test" else seed)
        self.images, self.labels = images, labels
        self.epoch = 0
        self._generator = torch.Generator().manual_seed(mix_seed(seed, 0x5EED))
        self._fixed_params: dict[str, torch.Tensor] | None = None
        self._fixed_store: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- to implement ------------------------------------------------------------------------------------------
    def _sample(self, generator: torch.Generator, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _render(self, indices: torch.Tensor, params: Mapping[str, torch.Tensor], compute_dtype) -> tuple:
        raise NotImplementedError

    def _options(self) -> tuple:
        """Everything besides the source digits and the fixed seed that changes the rendered bytes."""
        return ()

    # -- the contract --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds ``__getitem__``'s per-item generators (re-distorting sets)."""
        self.epoch = int(epoch)

    def batch(self, indices, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``float32 (B, *image_shape)`` in [0, 1] and labels ``int64 (B,)`` of the items ``indices``.

        Args:
            indices: ``(B,)`` integer indices in ``[0, len)``.
            generator: where a re-distorting set draws this call's distortions (ignored by fixed sets).

        Raises:
            ShapeError: ``indices`` is not 1-D.
            IndexError: an index is out of range.
        """
        index = self._check_indices(indices)
        if self.fixed:
            return self._fixed_batch(index)
        params = self._sample(generator if generator is not None else self._generator, index)
        return self._render(index, params, None)

    def __getitem__(self, i: int):
        index = torch.tensor([int(i)])
        generator = None if self.fixed else torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, int(i)))
        images, labels = self.batch(index, generator)
        return images[0], labels[0]

    # -- fixed sets ----------------------------------------------------------------------------------------------
    def _check_indices(self, indices) -> torch.Tensor:
        index = torch.as_tensor(indices)
        if index.dim() != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
            raise ShapeError(f"indices must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}")
        index = index.long()
        n = len(self)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            raise IndexError(f"indices must be in [0, {n}), got {int(index.min())}..{int(index.max())}")
        return index

    def _fixed_key(self) -> tuple:
        return (type(self).__name__, self._options(), self.fixed_seed, fingerprint(self.images, self.labels))

    def fixed_params(self) -> dict[str, torch.Tensor]:
        """The parameters of every item of a fixed set (drawn once, in one call, from ``fixed_seed``)."""
        if self._fixed_params is None:
            generator = torch.Generator().manual_seed(self.fixed_seed)
            self._fixed_params = self._sample(generator, torch.arange(len(self)))
        return self._fixed_params

    def _render_fixed(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._render(index, select_params(self.fixed_params(), index), torch.float64)

    def _fixed_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_values = len(self)
        for s in self.image_shape:
            n_values *= s
        if n_values * 4 > MAX_STORED_BYTES:
            return self._render_fixed(index)
        if self._fixed_store is None:
            key = self._fixed_key()
            stored = _CACHE.get(key)
            if stored is None:
                images = torch.empty((len(self), *self.image_shape), dtype=torch.float32)
                labels = torch.empty(len(self), dtype=torch.int64)
                for start in range(0, len(self), _RENDER_CHUNK):
                    chunk = torch.arange(start, min(start + _RENDER_CHUNK, len(self)))
                    images[chunk], labels[chunk] = self._render_fixed(chunk)
                stored = _CACHE[key] = (images, labels)
                while len(_CACHE) > _CACHE_ENTRIES:
                    _CACHE.popitem(last=False)
            _CACHE.move_to_end(key)
            self._fixed_store = stored
        images, labels = self._fixed_store
        return images[index], labels[index]

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        mode = "fixed" if self.fixed else "re-distorted"
        extra = self.extra_repr()
        return (
            f"{type(self).__name__}({extra + ', ' if extra else ''}split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, {mode})"
        )
