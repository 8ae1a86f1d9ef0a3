"""The paper's MNIST datasets as torch ``Dataset`` s: distorted MNIST (R, RTS, P, E, TC), MNIST addition,
co-localisation and the 3D volumes.

Every class follows the contract of :mod:`torchstn.data.contract` (``image_shape``, ``num_classes``, ``len``,
``batch(indices, generator)``, ``__getitem__``, ``set_epoch``); the recipes and every choice the paper leaves open are
in ``docs/datasets.md``. Digits come from :func:`torchstn.data.mnist.load_mnist` (``root``, ``source`` name) or are
injected as ``source=(images, labels)``, e.g. :func:`torchstn.data.synthetic.synthetic_digits` for tests. A user's own
``.npz`` is :class:`torchstn.data.tensor_file.TensorFile`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from torchstn._checks import look_up_option
from torchstn.data.contract import (
    SPLITS,
    PaperDataset,
    fingerprint,
    mix_seed,
    resolve_source,
    to_float,
)
from torchstn.data.distortions import (
    DIGIT,
    DISTORTIONS,
    Distortion,
    Extrude3D,
    RotateTranslateScale,
    TranslateClutter,
    get_distortion,
)
from torchstn.errors import DataError, OptionError

__all__ = ["DistortedMNIST", "MNISTAddition", "CoLocalisation", "Volume3D"]


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
            once with :data:`~torchstn.data.contract.TEST_SEED`, the same bytes on every CPU machine).
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
        >>> from torchstn.data.synthetic import synthetic_digits
        >>> ds = DistortedMNIST("RTS", source=synthetic_digits(16))
        >>> images, labels = ds.batch(torch.arange(4), torch.Generator().manual_seed(0))
        >>> ds.image_shape, images.shape, labels.dtype
        ((1, 42, 42), torch.Size([4, 1, 42, 42]), torch.int64)
    """

    def __init__(
        self,
        variant: str = "RTS",
        split: str = "train",
        seed: int = 0,
        root=None,
        fixed: bool | None = None,
        source=None,
        **distortion_options,
    ):
        variant = DISTORTIONS.canonical(variant)
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
    ``**options`` go to :class:`~torchstn.data.distortions.Extrude3D` (``depth=14``, ``rotate=True``,
    ``max_angle=30``, ``canvas=60``, ``placement="box"``).

    Example:
        >>> from torchstn.data.synthetic import synthetic_digits
        >>> ds = Volume3D(source=synthetic_digits(4), canvas=32, depth=4)
        >>> ds.image_shape, ds.batch(torch.arange(2))[0].shape
        ((1, 32, 32, 32), torch.Size([2, 1, 32, 32, 32]))
    """

    def __init__(
        self, split: str = "train", seed: int = 0, root=None, fixed: bool | None = None, source=None, **options
    ):
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
        >>> from torchstn.data.synthetic import synthetic_digits
        >>> ds = MNISTAddition(source=synthetic_digits(16))
        >>> images, labels = ds.batch(torch.arange(4), torch.Generator().manual_seed(0))
        >>> images.shape, ds.num_classes, bool(labels.max() <= 18)
        (torch.Size([4, 2, 42, 42]), 19, True)
    """

    num_classes = 19

    def __init__(
        self, split: str = "train", seed: int = 0, root=None, fixed: bool | None = None, source=None, **rts_options
    ):
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
        return {
            "partner": partner,
            **{f"a.{k}": v for k, v in first.items()},
            **{f"b.{k}": v for k, v in second.items()},
        }

    def _render(self, indices, params: Mapping[str, torch.Tensor], compute_dtype):
        partner = params["partner"]
        channels = []
        for prefix, digits in (("a.", indices), ("b.", partner)):
            own = {k[2:]: v for k, v in params.items() if k.startswith(prefix)}
            channels.append(self.distortion.apply(to_float(self.images[digits]), own, compute_dtype=compute_dtype))
        return torch.cat(channels, dim=1), self.labels[indices] + self.labels[partner]


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
        root, source: as :class:`DistortedMNIST`.
        canvas, n_clutter, clutter_size, subpixel: as :class:`~torchstn.data.distortions.TranslateClutter`.

    Example:
        >>> from torchstn.data.synthetic import synthetic_digits
        >>> ds = CoLocalisation(3, n=4, clutter=True, source=synthetic_digits(60))
        >>> image, label, box = ds[0]
        >>> image.shape, int(label), float(box[2] - box[0]), ds.boxes_normalised.shape
        (torch.Size([1, 84, 84]), 3, 28.0, torch.Size([4, 4]))
    """

    def __init__(
        self,
        digit: int,
        n: int = 100,
        clutter: bool = False,
        seed: int = 0,
        split: str = "test",
        root=None,
        source=None,
        canvas: int = 84,
        n_clutter: int = 16,
        clutter_size: int = 6,
        subpixel: bool = False,
    ):
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
        super().__init__(
            pool[self.source_index],
            pool_labels[self.source_index],
            split=split,
            seed=seed,
            fixed=True,
            fixed_seed=mix_seed(seed, digit),
        )
        self.digit, self.clutter = digit, bool(clutter)
        self.distortion = TranslateClutter(
            canvas, n_clutter if clutter else 0, clutter_size, pool=pool, placement="box", subpixel=subpixel
        )
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
