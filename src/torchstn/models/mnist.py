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
from torchstn.models.budget import check_widths, fit_width, meta_parameter_count, reference_budget
from torchstn.models.classifiers import cnn_classifier, fcn_classifier
from torchstn.models.registry import build_model, count_parameters, register_model
from torchstn.nn import ParallelSpatialTransformers, SpatialTransformer, conv_localisation, fc_localisation
from torchstn.transforms import get_transform

# fcn_classifier ... check_widths live in torchstn.models.classifiers / .budget; still importable from here.
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


def _fcn_widths(w: int) -> tuple[int, int]:
    return w, max(1, round(w * FCN_RATIO))


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


#: Each registered MNIST model's layout: ``(classifier body, localisation net or None, number of STs)``.
_LAYOUTS: dict[str, tuple[str, str | None, int]] = {
    "fcn": ("fcn", None, 1),
    "cnn": ("cnn", None, 1),
    "st_fcn": ("fcn", "fc", 1),
    "st_cnn": ("cnn", "conv", 1),
    "st_fcn_2x": ("fcn", "fc", 2),
    "st_cnn_2x": ("cnn", "conv", 2),
}


def _transformers(
    loc: str | None,
    n_st: int,
    in_shape: tuple[int, int, int],
    transform: str,
    bound: float | None,
    st_options: dict | None,
    loc_hidden: Sequence[int],
    loc_channels: int,
    loc_fc: int,
) -> nn.Module | None:
    """The model's spatial transformer(s) on ``in_shape`` (None without a localisation net)."""
    C, H, W = in_shape
    if bound is not None:
        if st_options and "bound" in st_options:
            raise OptionError("give bound either as an option or in st_options, not both")
        st_options = {**(st_options or {}), "bound": bound}
    if loc == "fc":
        return _make_transformers(lambda: fc_localisation(C * H * W, loc_hidden), n_st, transform, st_options)
    if loc == "conv":
        return _make_transformers(
            lambda: conv_localisation(C, (H, W), channels=loc_channels, fc=loc_fc), n_st, transform, st_options
        )
    return None


def _classifier_widths(
    body: str,
    make: Callable[[tuple[int, int]], nn.Module],
    st_count: int,
    widths: object,
    budget: int | None,
    budget_of: Callable[[], int],
) -> tuple[tuple[int, int], int | None]:
    """``(widths, budget)``: the given ``widths`` checked, or those whose model (``st_count`` + ``make(widths)``)
    is closest to ``budget`` (default ``budget_of()``)."""
    to_widths = _fcn_widths if body == "fcn" else (lambda w: (w, w))
    width_name = "hidden" if body == "fcn" else "channels"
    if widths is not None:
        if budget is not None:
            raise OptionError(f"give either {width_name} or budget, not both")
        return check_widths(width_name, widths), budget
    if budget is None:
        budget = budget_of()
    elif isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise OptionError(f"budget must be a positive int or None, got {budget!r}")
    return to_widths(fit_width(lambda w: st_count + meta_parameter_count(lambda: make(to_widths(w))), budget)), budget


def _build(
    name: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    transform: str = "affine",
    st_pool: bool = False,
    hidden: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    budget: int | None = None,
    bound: float | None = None,
    st_options: dict | None = None,
    loc_hidden: Sequence[int] = (32, 32, 32),
    loc_channels: int = 20,
    loc_fc: int = 20,
) -> PaperNet:
    """The registered model ``name`` (see ``_LAYOUTS``) from its builder's options, unchanged."""
    body, loc, n_st = _LAYOUTS[name]
    C, H, W = in_shape
    st = _transformers(loc, n_st, in_shape, transform, bound, st_options, loc_hidden, loc_channels, loc_fc)
    pooled = st is not None and st_pool
    Cc, Hc, Wc = (C * n_st if st is not None else C), (H // 2 if pooled else H), (W // 2 if pooled else W)
    if Hc < 1 or Wc < 1:
        raise ShapeError(f"in_shape {in_shape} is too small to pool x2")

    def make(ws: tuple[int, int]) -> nn.Sequential:
        if body == "fcn":
            return fcn_classifier(Cc * Hc * Wc, ws, num_classes)
        return cnn_classifier(Cc, (Hc, Wc), ws, num_classes)

    st_count = 0 if st is None else count_parameters(st)
    given = hidden if body == "fcn" else channels
    ws, budget = _classifier_widths(
        body, make, st_count, given, budget, lambda: reference_budget(in_shape, num_classes)
    )
    arch = {
        "name": name,
        "transform": transform if st is not None else None,
        "st_pool": pooled,
        ("hidden" if body == "fcn" else "channels"): ws,
        "budget": budget,
    }
    return PaperNet(make(ws), st, st_pool=pooled, arch=arch)


# Every builder below hands its own options on to _build unchanged: ``**locals()`` is exactly its signature.


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
    return _build("fcn", **locals())


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
    return _build("cnn", **locals())


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
    return _build("st_fcn", **locals())


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
    return _build("st_cnn", **locals())


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
    return _build("st_fcn_2x", **locals())


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
    return _build("st_cnn_2x", **locals())


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
