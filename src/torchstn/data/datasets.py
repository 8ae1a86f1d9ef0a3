"""The paper's MNIST datasets as torch ``Dataset`` s: distorted MNIST (R, RTS, P, E, TC), MNIST addition,
co-localisation, the 3D volumes, and :class:`TensorFile` for a user's own ``.npz``.

Every class follows the contract of :mod:`torchstn.data.datasets_base` (``image_shape``, ``num_classes``, ``len``,
``batch(indices, generator)``, ``__getitem__``, ``set_epoch``); the recipes and every choice the paper leaves open are
in ``docs/datasets.md``. Digits come from :func:`torchstn.data.mnist.load_mnist` (``root``, ``source`` name) or are
injected as ``source=(images, labels)``, e.g. :func:`synthetic_digits` for tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from torchstn._checks import look_up_option
from torchstn.data.datasets_base import (
    SPLITS,
    TEST_SEED,
    PaperDataset,
    fingerprint,
    resolve_source,
    to_float,
)
from torchstn.data.datasets_extra import CoLocalisation, TensorFile
from torchstn.data.datasets_synthetic import synthetic_digits
from torchstn.data.distortions import (
    Distortion,
    Extrude3D,
    RotateTranslateScale,
    canonical_variant,
    get_distortion,
)

__all__ = ["DistortedMNIST", "MNISTAddition", "CoLocalisation", "Volume3D", "TensorFile", "synthetic_digits",
           "TEST_SEED"]


class _OneDigit(PaperDataset):
    """One digit per item, distorted by ``distortion`` (TC clutter comes from the split's own digits by default)."""

    def __init__(self, distortion: Distortion, images, labels, *, split, seed, fixed, own_pool: bool):
        super().__init__(images, labels, split=split, seed=seed, fixed=fixed)
        self.distortion = distortion
        self.image_shape = distortion.image_shape
        self._own_pool = own_pool

    def _options(self) -> tuple:
        options = tuple(sorted((k, repr(v)) for k, v in self.distortion.options().items()))
        pool = getattr(self.distortion, "pool", None)
        pool_key = fingerprint(pool) if pool is not None and not self._own_pool else None
        return (self.distortion.name, options, pool_key)

    def _sample(self, generator, indices):
        if self._own_pool:  # never use an image's own digit as its clutter
            return self.distortion.sample_params(generator, indices.numel(), exclude=indices)
        return self.distortion.sample_params(generator, indices.numel())

    def _render(self, indices, params, compute_dtype):
        x = to_float(self.images[indices])  # (B, 1, 28, 28)
        return self.distortion.apply(x, params, compute_dtype=compute_dtype), self.labels[indices]


class DistortedMNIST(_OneDigit):
    """Distorted MNIST (§4.1): each digit distorted by a paper variant, 10 classes.

    Args:
        variant: ``"plain"``, ``"R"``, ``"RTS"``, ``"P"``, ``"E"`` or ``"TC"`` (case-insensitive).
        split: ``"train"`` (re-distorted on every call unless ``fixed=True``) or ``"test"`` (always fixed: distorted
            once with :data:`TEST_SEED`, the same bytes on every CPU machine).
        seed: seeds the internal generator, ``__getitem__``'s per-item generators and ``fixed=True`` training sets.
        root: directory with the MNIST IDX files (see :func:`torchstn.data.mnist.load_mnist`).
        fixed: ``True`` distorts a training set once, with ``seed``.
        source: ``None``/an MNIST source name (``"auto"``, ``"local"``, ...) or ``(images, labels)`` to use instead.
        **distortion_options: options of the variant's distortion (``canvas=42`` for R, ``placement=...``,
            ``pool=`` clutter digits for TC: by default the same split's digits, never an image's own).

    Raises:
        OptionError: unknown variant (with a suggestion), split or option.
        DataError: missing or malformed digits.

    Example:
        >>> ds = DistortedMNIST("RTS", source=synthetic_digits(16))
        >>> images, labels = ds.batch(torch.arange(4), torch.Generator().manual_seed(0))
        >>> ds.image_shape, images.shape, labels.dtype
        ((1, 42, 42), torch.Size([4, 1, 42, 42]), torch.int64)
    """

    def __init__(self, variant: str = "RTS", split: str = "train", seed: int = 0, root=None,
                 fixed: bool | None = None, source=None, **distortion_options):  # fmt: skip
        variant = canonical_variant(variant)
        split = look_up_option("split", split, SPLITS)
        images, labels = resolve_source(split, root, source)
        own_pool = variant == "TC" and "pool" not in distortion_options
        if own_pool:
            distortion_options["pool"] = images
        distortion = get_distortion(variant, **distortion_options)
        super().__init__(distortion, images, labels, split=split, seed=seed, fixed=fixed, own_pool=own_pool)
        self.variant = variant

    def extra_repr(self) -> str:
        return f"{self.variant!r}"


class Volume3D(_OneDigit):
    """3D (Appendix A.3): the digit extruded and placed (and, by default, rotated) in a 60^3 volume, 10 classes.

    Items are ``(1, 60, 60, 60)`` volumes (``(C, D, H, W)``). The fixed test set keeps only its parameters (10k
    volumes would take 8.6 GB) and renders the same bytes on demand. Arguments as :class:`DistortedMNIST`;
    ``**options`` go to :class:`~torchstn.data.distortions_canvas.Extrude3D` (``depth=14``, ``rotate=True``,
    ``max_angle=30``, ``canvas=60``, ``placement="box"``).

    Example:
        >>> ds = Volume3D(source=synthetic_digits(4), canvas=32, depth=4)
        >>> ds.image_shape, ds.batch(torch.arange(2))[0].shape
        ((1, 32, 32, 32), torch.Size([2, 1, 32, 32, 32]))
    """

    def __init__(self, split: str = "train", seed: int = 0, root=None, fixed: bool | None = None, source=None,
                 **options):  # fmt: skip
        split = look_up_option("split", split, SPLITS)
        images, labels = resolve_source(split, root, source)
        super().__init__(Extrude3D(**options), images, labels, split=split, seed=seed, fixed=fixed, own_pool=False)


class MNISTAddition(PaperDataset):
    """MNIST addition (Appendix A.1): two digits, each RTS-distorted independently in its own 42x42 channel; the
    label is their sum (19 classes).

    Item ``i`` pairs digit ``i`` (channel 0) with a partner digit (channel 1) drawn uniformly from the split: anew on
    every call for a re-distorting set, once for a fixed one. ``params`` per item, in draw order: ``partner (B,)``,
    then the RTS parameters of channel 0 (keys ``"a.angle"``, ...) and of channel 1 (``"b.angle"``, ...).
    Arguments as :class:`DistortedMNIST`; ``**rts_options`` go to
    :class:`~torchstn.data.distortions.RotateTranslateScale`.

    Example:
        >>> ds = MNISTAddition(source=synthetic_digits(16))
        >>> images, labels = ds.batch(torch.arange(4), torch.Generator().manual_seed(0))
        >>> images.shape, ds.num_classes, bool(labels.max() <= 18)
        (torch.Size([4, 2, 42, 42]), 19, True)
    """

    num_classes = 19

    def __init__(self, split: str = "train", seed: int = 0, root=None, fixed: bool | None = None, source=None,
                 **rts_options):  # fmt: skip
        split = look_up_option("split", split, SPLITS)
        images, labels = resolve_source(split, root, source)
        super().__init__(images, labels, split=split, seed=seed, fixed=fixed)
        self.distortion = RotateTranslateScale(**rts_options)
        self.image_shape = (2, *self.distortion.out_size)

    def _options(self) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in self.distortion.options().items()))

    def _sample(self, generator, indices):
        B = indices.numel()
        partner = torch.randint(0, len(self), (B,), generator=generator)
        first = self.distortion.sample_params(generator, B)
        second = self.distortion.sample_params(generator, B)
        return {"partner": partner, **{f"a.{k}": v for k, v in first.items()},
                **{f"b.{k}": v for k, v in second.items()}}  # fmt: skip

    def _render(self, indices, params: Mapping[str, torch.Tensor], compute_dtype):
        partner = params["partner"]
        channels = []
        for prefix, digits in (("a.", indices), ("b.", partner)):
            own = {k[2:]: v for k, v in params.items() if k.startswith(prefix)}
            channels.append(self.distortion.apply(to_float(self.images[digits]), own, compute_dtype=compute_dtype))
        return torch.cat(channels, dim=1), self.labels[indices] + self.labels[partner]

