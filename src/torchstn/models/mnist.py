"""The paper's distorted-MNIST models (§4.1, Appendix A): FCN, CNN, ST-FCN, ST-CNN and the 2xST variants.

Classification networks (three weight layers, ReLU, logits out):

- **FCN**: flatten, FC ``h1``, FC ``h2``, FC ``num_classes``; ``h2 = round(h1 * 200 / 256)``.
- **CNN**: conv 9x9 (``c1``) -> max-pool 2 -> conv 7x7 (``c2``) -> max-pool 2 -> FC ``num_classes``; the convs use
  'same' padding (4 and 3), so an ``H x W`` input reaches the classifier as ``(H // 4) x (W // 4)``: 7x7 for 28x28,
  10x10 for 42x42, 15x15 for 60x60 (5x5 / 10x10 / 7x7 after ``st_pool``).

ST nets put one spatial transformer on the input (its localisation net sees the input): ST-FCN uses the paper's FC
localisation (3 x 32 units, :func:`~torchstn.nn.fc_localisation`), ST-CNN its conv localisation
(:func:`~torchstn.nn.conv_localisation`). With ``st_pool=True`` the ST samples at the *full* input size and its
output is average-pooled x2: sampling a half-size grid directly would alias (paper §3.4).

**Parameter budget.** The paper matches parameter counts per experiment without giving widths. Here the budget for
an input shape is the count of the reference CNN with 64/64 channels (a common re-implementation choice; 237k on
28x28, 270k on 42x42, 350k on 60x60); every model then solves its classifier width (FCN ``h1``, CNN ``c1 = c2``)
so that its *total* count, localisation nets included, is closest to the budget. So the plain CNN is exactly 64/64,
the FCN on 28x28 is about 242/189 (the faithful 256/200 would be 254k), and ST nets get narrower classifiers that
pay for their localisation nets. Pass ``hidden`` / ``channels`` to fix widths, or ``budget`` to change the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from torchstn.errors import OptionError, ShapeError
from torchstn.models.registry import build_model, count_parameters, register_model
from torchstn.nn import ParallelSpatialTransformers, SpatialTransformer, conv_localisation, fc_localisation
from torchstn.transforms import get_transform

__all__ = [
    "PaperNet",
    "fcn_classifier",
    "cnn_classifier",
    "reference_budget",
    "fit_width",
    "meta_parameter_count",
    "check_widths",
    "parameter_table",
    "TABLE1_MODELS",
]

FCN_RATIO = 200 / 256
REFERENCE_CHANNELS = (64, 64)
MIN_WIDTH = 4
#: The 8 rows of the paper's Table 1: ``(model name, transform)``.
TABLE1_MODELS: tuple[tuple[str, str | None], ...] = (
    ("fcn", None),
    ("cnn", None),
    ("st_fcn", "affine"),
    ("st_fcn", "projective"),
    ("st_fcn", "tps"),
    ("st_cnn", "affine"),
    ("st_cnn", "projective"),
    ("st_cnn", "tps"),
)
# SpatialTransformer arguments the model sets itself; st_options may not override them.
_ST_FIXED = ("localisation", "transform", "out_size", "in_features")


class PaperNet(nn.Module):
    """``logits = classifier(pool(st(x)))``: an optional spatial transformer (or parallel ones) on the input, an
    optional x2 average pool of its output, then a classification network.

    Attributes:
        transformers: the :class:`~torchstn.nn.SpatialTransformer` modules the model contains (for logging theta;
            see also :func:`torchstn.nn.record_theta`).
        arch: a dict describing the built model (name, transform, st_pool, widths, budget).
    """

    def __init__(
        self, classifier: nn.Module, st: nn.Module | None = None, *, st_pool: bool = False, arch: dict | None = None
    ):
        super().__init__()
        self.st = st if st is not None else nn.Identity()
        self.pool = nn.AvgPool2d(2) if (st is not None and st_pool) else nn.Identity()
        self.classifier = classifier
        self.arch = dict(arch or {})

    @property
    def transformers(self) -> list[SpatialTransformer]:
        return [m for m in self.modules() if isinstance(m, SpatialTransformer)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.st(x)))  # (B, num_classes)


def fcn_classifier(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """The FCN: flatten ``(B, ...) -> (B, in_features)``, two hidden FC layers with ReLU, FC to logits.

    Example:
        >>> fcn_classifier(28 * 28, (256, 200), 10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    h1, h2 = (int(h) for h in hidden)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(int(in_features), h1),
        nn.ReLU(inplace=True),
        nn.Linear(h1, h2),
        nn.ReLU(inplace=True),
        nn.Linear(h2, num_classes),
    )


def cnn_classifier(
    in_channels: int, in_size: Sequence[int], channels: Sequence[int], num_classes: int
) -> nn.Sequential:
    """The CNN: conv 9x9 -> ReLU -> max-pool 2 -> conv 7x7 -> ReLU -> max-pool 2 -> FC to logits ('same' padding).

    Raises:
        ShapeError: ``in_size`` below 4x4 (nothing left after the two pools).

    Example:
        >>> cnn_classifier(1, (42, 42), (64, 64), 10)(torch.rand(2, 1, 42, 42)).shape
        torch.Size([2, 10])
    """
    H, W = (int(s) for s in in_size)
    if H < 4 or W < 4:
        raise ShapeError(f"the CNN needs inputs of at least 4x4 (two 2x pools), got {H}x{W}")
    c1, c2 = (int(c) for c in channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 9, padding=4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 7, padding=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),  # (B, c2 * (H // 4) * (W // 4))
        nn.Linear(c2 * (H // 4) * (W // 4), num_classes),
    )


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


def _fcn_widths(w: int) -> tuple[int, int]:
    return w, max(1, round(w * FCN_RATIO))


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


def _make_transformers(loc: Callable[[], nn.Module], n: int, transform: str, st_options: dict | None) -> nn.Module:
    """``n`` spatial transformers (each with its own localisation net); :class:`SpatialTransformer` checks the
    ``st_options`` names (with a suggestion), except those the model sets itself."""
    st_options = dict(st_options or {})
    family = get_transform(transform)  # unknown names raise here, with a suggestion
    if 2 not in family.ranks:
        raise OptionError(f"the MNIST models need a 2D transform family, got {transform!r} (ranks {family.ranks})")
    fixed = [key for key in st_options if key in _ST_FIXED]
    if fixed:
        raise OptionError(f"st_options may not set {fixed[0]!r}: the model sets it")
    sts = [SpatialTransformer(loc(), transform, **st_options) for _ in range(n)]
    return sts[0] if n == 1 else ParallelSpatialTransformers(sts)


def _build(
    name: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    body: str,
    loc: str | None,
    n_st: int = 1,
    transform: str = "affine",
    st_pool: bool = False,
    widths: object = None,
    budget: int | None = None,
    loc_hidden: Sequence[int] = (32, 32, 32),
    loc_channels: int = 20,
    loc_fc: int = 20,
    bound: float | None = None,
    st_options: dict | None = None,
) -> PaperNet:
    C, H, W = in_shape
    if bound is not None:
        if st_options and "bound" in st_options:
            raise OptionError("give bound either as an option or in st_options, not both")
        st_options = {**(st_options or {}), "bound": bound}
    st = None
    if loc == "fc":
        st = _make_transformers(lambda: fc_localisation(C * H * W, loc_hidden), n_st, transform, st_options)
    elif loc == "conv":
        st = _make_transformers(
            lambda: conv_localisation(C, (H, W), channels=loc_channels, fc=loc_fc), n_st, transform, st_options
        )
    pooled = st is not None and st_pool
    Cc, Hc, Wc = (C * n_st if st is not None else C), (H // 2 if pooled else H), (W // 2 if pooled else W)
    if Hc < 1 or Wc < 1:
        raise ShapeError(f"in_shape {in_shape} is too small to pool x2")

    def make(ws: tuple[int, int]) -> nn.Sequential:
        if body == "fcn":
            return fcn_classifier(Cc * Hc * Wc, ws, num_classes)
        return cnn_classifier(Cc, (Hc, Wc), ws, num_classes)

    to_widths = _fcn_widths if body == "fcn" else (lambda w: (w, w))
    width_name = "hidden" if body == "fcn" else "channels"
    if widths is not None:
        if budget is not None:
            raise OptionError(f"give either {width_name} or budget, not both")
        ws = check_widths(width_name, widths)
    else:
        if budget is None:
            budget = reference_budget(in_shape, num_classes)
        elif isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise OptionError(f"budget must be a positive int or None, got {budget!r}")
        st_count = 0 if st is None else count_parameters(st)
        ws = to_widths(fit_width(lambda w: st_count + meta_parameter_count(lambda: make(to_widths(w))), budget))
    arch = {
        "name": name,
        "transform": transform if st is not None else None,
        "st_pool": pooled,
        width_name: ws,
        "budget": budget,
    }
    return PaperNet(make(ws), st, st_pool=pooled, arch=arch)


@register_model("fcn")
def fcn(
    in_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    st_pool: bool = False,
    hidden: Sequence[int] | None = None,
    budget: int | None = None,
) -> PaperNet:
    """The paper's FCN baseline. ``hidden=(h1, h2)`` fixes the widths; by default they fit the budget.
    ``st_pool`` is accepted and ignored (no ST).

    Example:
        >>> fcn((1, 28, 28)).arch["hidden"]
        (242, 189)
    """
    return _build("fcn", in_shape, num_classes, body="fcn", loc=None, widths=hidden, budget=budget)


@register_model("cnn")
def cnn(
    in_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    st_pool: bool = False,
    channels: Sequence[int] | None = None,
    budget: int | None = None,
) -> PaperNet:
    """The paper's CNN baseline. ``channels=(c1, c2)`` fixes the widths; by default they fit the budget (64/64).
    ``st_pool`` is accepted and ignored (no ST).

    Example:
        >>> cnn((1, 42, 42)).arch["channels"]
        (64, 64)
    """
    return _build("cnn", in_shape, num_classes, body="cnn", loc=None, widths=channels, budget=budget)


@register_model("st_fcn")
def st_fcn(
    in_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    transform: str = "affine",
    st_pool: bool = False,
    hidden: Sequence[int] | None = None,
    budget: int | None = None,
    loc_hidden: Sequence[int] = (32, 32, 32),
    bound: float | None = None,
    st_options: dict | None = None,
) -> PaperNet:
    """ST-FCN: FC localisation (``loc_hidden``) + identity-initialised head, ST on the input, then the FCN.
    ``bound`` keeps theta within ``bound`` of the identity (see :class:`~torchstn.nn.ThetaHead`); ``st_options`` go
    to :class:`~torchstn.nn.SpatialTransformer` (e.g. ``padding_mode``, ``mode``, the family's options such as
    ``grid_size``).

    Example:
        >>> st_fcn((1, 60, 60), transform="projective", st_pool=True)(torch.rand(2, 1, 60, 60)).shape
        torch.Size([2, 10])
    """
    return _build(
        "st_fcn",
        in_shape,
        num_classes,
        body="fcn",
        loc="fc",
        transform=transform,
        st_pool=st_pool,
        widths=hidden,
        budget=budget,
        loc_hidden=loc_hidden,
        bound=bound,
        st_options=st_options,
    )


@register_model("st_cnn")
def st_cnn(
    in_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    transform: str = "affine",
    st_pool: bool = False,
    channels: Sequence[int] | None = None,
    budget: int | None = None,
    loc_channels: int = 20,
    loc_fc: int = 20,
    bound: float | None = None,
    st_options: dict | None = None,
) -> PaperNet:
    """ST-CNN: conv localisation (input max-pooled x2, two 5x5 convs of ``loc_channels``, FC ``loc_fc``) + head,
    ST on the input, then the CNN. ``bound`` and ``st_options`` as for :func:`st_fcn`.

    Example:
        >>> st_cnn((1, 28, 28), transform="tps").arch["channels"]
        (62, 62)
    """
    return _build(
        "st_cnn",
        in_shape,
        num_classes,
        body="cnn",
        loc="conv",
        transform=transform,
        st_pool=st_pool,
        widths=channels,
        budget=budget,
        loc_channels=loc_channels,
        loc_fc=loc_fc,
        bound=bound,
        st_options=st_options,
    )


@register_model("st_fcn_2x")
def st_fcn_2x(
    in_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    transform: str = "affine",
    st_pool: bool = False,
    hidden: Sequence[int] | None = None,
    budget: int | None = None,
    loc_hidden: Sequence[int] = (32, 32, 32),
    bound: float | None = None,
    st_options: dict | None = None,
) -> PaperNet:
    """2xST-FCN (MNIST addition): two parallel STs, each with its own FC localisation seeing every channel, outputs
    concatenated along channels (``2C``) into the FCN. Note the two FC localisation nets take a large share of the
    budget on big inputs; pass ``st_pool=True`` (as the paper on RTS) or a larger ``budget``.

    Example:
        >>> st_fcn_2x((2, 42, 42), 19, st_pool=True)(torch.rand(2, 2, 42, 42)).shape
        torch.Size([2, 19])
    """
    return _build(
        "st_fcn_2x",
        in_shape,
        num_classes,
        body="fcn",
        loc="fc",
        n_st=2,
        transform=transform,
        st_pool=st_pool,
        widths=hidden,
        budget=budget,
        loc_hidden=loc_hidden,
        bound=bound,
        st_options=st_options,
    )


@register_model("st_cnn_2x")
def st_cnn_2x(
    in_shape: tuple[int, int, int],
    num_classes: int = 10,
    *,
    transform: str = "affine",
    st_pool: bool = False,
    channels: Sequence[int] | None = None,
    budget: int | None = None,
    loc_channels: int = 20,
    loc_fc: int = 20,
    bound: float | None = None,
    st_options: dict | None = None,
) -> PaperNet:
    """2xST-CNN: two parallel STs with conv localisation, outputs concatenated (``2C`` channels) into the CNN.

    Example:
        >>> st_cnn_2x((2, 42, 42), 19)(torch.rand(2, 2, 42, 42)).shape
        torch.Size([2, 19])
    """
    return _build(
        "st_cnn_2x",
        in_shape,
        num_classes,
        body="cnn",
        loc="conv",
        n_st=2,
        transform=transform,
        st_pool=st_pool,
        widths=channels,
        budget=budget,
        loc_channels=loc_channels,
        loc_fc=loc_fc,
        bound=bound,
        st_options=st_options,
    )


def parameter_table(
    in_shape: Sequence[int], num_classes: int = 10, *, st_pool: bool = False
) -> list[tuple[str, str | None, int]]:
    """``(model, transform, parameter count)`` for the 8 models of the paper's Table 1 on ``in_shape``.

    Example:
        >>> rows = parameter_table((1, 28, 28))
        >>> rows[0], rows[1], len(rows)
        (('fcn', None, 237797), ('cnn', None, 237386), 8)
        >>> counts = [c for _, _, c in rows]
        >>> max(counts) / min(counts) < 1.1
        True
    """
    return [
        (
            name,
            t,
            count_parameters(
                build_model(name, in_shape=tuple(in_shape), num_classes=num_classes, transform=t, st_pool=st_pool)
            ),
        )
        for name, t in TABLE1_MODELS
    ]
