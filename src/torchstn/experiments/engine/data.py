"""The data side of training: datasets from a config, and a batch order that is a pure function of the step.

Datasets follow one contract (:mod:`torchstn.data.contract`): attributes ``image_shape (C, H, W)`` and
``num_classes``, ``len()``, and ``batch(indices, generator) -> (images float32 (B, C, H, W), labels int64 (B,))``;
a re-distorting training set draws its distortions from ``generator``, which the trainer owns and checkpoints.

The batch order needs no state: :func:`batch_indices` cuts a stream of per-epoch permutations, each seeded by
``(seed, epoch)``, so step ``s`` always reads the same images and a resumed run continues the same order.

Example:
    >>> batch_indices(0, 4, n=10, seed=0).tolist() == batch_indices(0, 4, n=10, seed=0).tolist()
    True
    >>> torch.cat([batch_indices(s, 4, n=10, seed=0) for s in range(5)]).view(2, 10).sort(1).values[0].tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch

from torchstn.errors import ConfigError, DataError

__all__ = ["Dataset", "build_datasets", "batch_indices", "data_generator"]


class Dataset(Protocol):
    image_shape: tuple[int, ...]
    num_classes: int

    def __len__(self) -> int: ...

    def batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def build_datasets(cfg, *, train: bool = True, test: bool = True) -> tuple[Dataset | None, Dataset | None]:
    """The training set (re-distorting, seeded by ``run.seed``) and the fixed test set of ``cfg.data``.

    Args:
        cfg: a :class:`~torchstn.experiments.engine.config.TrainConfig`.
        train, test: which to build (``None`` in place of the other).

    Raises:
        DataError: MNIST or a tensor file cannot be loaded.
        ConfigError: an option the datasets reject.
    """
    from torchstn.data import TensorFile, synthetic_digits

    d = cfg.data
    train_source = test_source = None
    if d.synthetic:
        train_source = synthetic_digits(d.synthetic, seed=1)
        test_source = synthetic_digits(max(10, d.synthetic // 6), seed=2)
    train_set = test_set = None
    # a variant without recipes (or without a spread) refuses the option with a clear error
    options = {k: v for k, v in (("recipe", d.recipe), ("sigma", d.sigma)) if v is not None}
    try:
        if train:
            train_set = (
                TensorFile(d.train_file)
                if d.train_file
                else _variant_set(
                    d.variant, split="train", seed=cfg.run.seed, root=d.root, source=train_source, **options
                )
            )
        if test:
            test_set = (
                TensorFile(d.test_file)
                if d.test_file
                else _variant_set(d.variant, split="test", root=d.root, source=test_source, **options)
            )
    except (DataError, ConfigError):
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[data] {e}") from e
    return train_set, test_set


def _variant_set(variant: str, **kwargs) -> Dataset:
    """The dataset of ``data.variant``: distorted MNIST, MNIST addition or the 3D volumes."""
    from torchstn.data import DistortedMNIST, MNISTAddition, Volume3D

    if variant == "addition":
        return MNISTAddition(**kwargs)
    if variant == "3D":
        return Volume3D(**kwargs)
    return DistortedMNIST(variant, **kwargs)


def data_generator(seed: int) -> torch.Generator:
    """The generator the training distortions are drawn from (checkpointed with every run)."""
    return torch.Generator().manual_seed(int(seed) * 2 + 1)


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))
    return torch.randperm(n, generator=g)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Indices of the images of iteration ``step``: samples ``step * batch_size`` onwards of the stream made of one
    random permutation of ``range(n)`` per epoch. Every image is seen once per epoch.

    Returns:
        LongTensor ``(batch_size,)``.
    """
    if n <= 0:
        raise DataError("the training set is empty")
    start = step * batch_size
    parts, k = [], start
    while k < start + batch_size:
        epoch, pos = divmod(k, n)
        take = min(n - pos, start + batch_size - k)
        parts.append(_permutation(n, seed, epoch)[pos : pos + take])
        k += take
    return parts[0] if len(parts) == 1 else torch.cat(parts)
