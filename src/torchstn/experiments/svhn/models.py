"""The paper's SVHN models (§4.2, Table 2): the 11-layer CNN, ST-CNN Single and ST-CNN Multi.

**CNN** (after Goodfellow et al. 2014, as the STN paper gives it): ``conv[48,5]-max-conv[64,5]-conv[128,5]-max-
conv[160,5]-conv[192,5]-max-conv[192,5]-conv[192,5]-max-conv[192,5]-fc[3072]-fc[3072]``, then 5 independent
softmax heads of 11 classes (digits 0-9 and the null class 10 after the sequence's end). Convs are 5x5 with 'same'
padding, max-pools 2x2 stride 2, ReLU after every hidden layer; dropout 0.5 on every hidden layer's output except the
first conv's. A 64x64 input reaches the FC layers as ``192 x 4 x 4 = 3072``.

*Our reading of "11 hidden layers"*: the list above has 10 (8 conv + 2 FC). Goodfellow et al.'s 11 are 8 conv, one
locally connected and 2 FC layers; the STN paper lists no locally connected layer. By default we build the 10 listed
layers; ``extra_conv=True`` adds a 9th ``conv[192,5]`` where Goodfellow's locally connected layer was (an 11-layer
variant; not a locally connected layer, which would add ~6M parameters).

**ST-CNN Single**: one affine spatial transformer on the input. Its localisation net, which the paper does not give,
is our choice of a 4-layer CNN: ``conv[32,5]-max-conv[32,5]-max-fc[32]-fc[32]`` ('same' padding, ReLU), then the
zero-weight, identity-bias regression layer.

**ST-CNN Multi**: an affine spatial transformer before each of the first four conv layers, each acting on the
feature map that layer receives (the image, then 48, 64 and 128 channels), each with a localisation net of two FC
layers of 32 units (paper). The transformers keep their input's size. No dropout in any localisation net.

Weights (not given by the paper [?]): He-normal conv and FC layers with zero biases (PyTorch's default init fades
through 10 plain ReLU layers and the net does not learn); localisation nets keep PyTorch's default init and their
regression layers start at zero weights and the identity bias.

Every model returns logits ``(B, 5, 11)``; :func:`sequence_loss` sums the 5 heads' cross-entropies and
:func:`sequence_error` counts a sequence as right only if all 5 heads are (null classes included).

Example:
    >>> model = svhn_st_cnn_multi((3, 64, 64), channels=(8, 8, 8, 8, 8, 8, 8, 8), fc=(16, 16))
    >>> model(torch.rand(2, 3, 64, 64)).shape, len(model.transformers)
    (torch.Size([2, 5, 11]), 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.errors import OptionError, ShapeError
from torchstn.models.registry import register_model
from torchstn.nn import LocalisationNet, SpatialTransformer, fc_localisation

__all__ = [
    "SVHNNet",
    "svhn_cnn",
    "svhn_st_cnn_single",
    "svhn_st_cnn_multi",
    "sequence_loss",
    "sequence_error",
    "sequence_correct",
    "single_localisation",
    "SVHN_CHANNELS",
    "SVHN_FC",
    "SVHN_MODELS",
]

#: Conv widths of the 8 conv layers, and where a 2x2 max-pool follows (after conv 1, 3, 5 and 7).
SVHN_CHANNELS = (48, 64, 128, 160, 192, 192, 192, 192)
POOL_AFTER = (0, 2, 4, 6)
SVHN_FC = (3072, 3072)
SVHN_MODELS = ("svhn_cnn", "svhn_st_cnn_single", "svhn_st_cnn_multi")


def _ints(name: str, value: object, n: int | None = None) -> tuple[int, ...]:
    if (
        isinstance(value, Sequence)
        and (n is None or len(value) == n)
        and len(value) > 0
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return tuple(int(v) for v in value)
    raise OptionError(f"{name} must be {n or 'some'} positive ints, got {value!r}")


class SVHNNet(nn.Module):
    """``logits (B, P, K) = heads(fc(convs(x)))`` with an optional spatial transformer before any conv layer.

    Args:
        convs: the conv blocks (conv, ReLU, [max-pool], [dropout]).
        transformers_before: one module per conv block, applied to that block's input (``nn.Identity`` for none).
        fc: flatten and the hidden FC layers.
        heads: one linear layer producing the ``P`` heads' ``K`` logits each (rows of separate heads are
            independent: equivalent to ``P`` separate linear layers).
        num_positions, num_classes: ``P`` and ``K``.
    """

    def __init__(
        self,
        convs: Sequence[nn.Module],
        transformers_before: Sequence[nn.Module],
        fc: nn.Module,
        heads: nn.Linear,
        num_positions: int,
        num_classes: int,
        arch: dict | None = None,
    ):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.st = nn.ModuleList(transformers_before)
        self.fc = fc
        self.heads = heads
        self.num_positions, self.num_classes = int(num_positions), int(num_classes)
        self.arch = dict(arch or {})

    @property
    def transformers(self) -> list[SpatialTransformer]:
        return [m for m in self.modules() if isinstance(m, SpatialTransformer)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for st, conv in zip(self.st, self.convs):
            x = conv(st(x))  # (B, C_k, H_k, W_k)
        logits = self.heads(self.fc(x))  # (B, P * K)
        return logits.view(-1, self.num_positions, self.num_classes)  # (B, P, K)


def single_localisation(
    in_channels: int, in_size: Sequence[int], channels: Sequence[int] = (32, 32), fc: Sequence[int] = (32, 32)
) -> nn.Sequential:
    """ST-CNN Single's localisation net: ``conv[c1,5]-max-conv[c2,5]-max-fc[f1]-fc[f2]`` ('same' padding, ReLU).

    Example:
        >>> single_localisation(3, (64, 64))(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 32])
    """
    H, W = (int(s) for s in in_size)
    c1, c2 = _ints("loc_channels", channels, 2)
    f1, f2 = _ints("loc_fc", fc, 2)
    if H < 4 or W < 4:
        raise ShapeError(f"the localisation net needs inputs of at least 4x4, got {H}x{W}")
    return LocalisationNet(
        nn.Conv2d(in_channels, c1, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (H // 4) * (W // 4), f1),
        nn.ReLU(inplace=True),
        nn.Linear(f1, f2),
        nn.ReLU(inplace=True),
        out_features=f2,
        in_shape=(in_channels, H, W),
        builder="single_localisation",
    )


def _build(
    name: str,
    in_shape: Sequence[int],
    num_classes: int,
    *,
    st: str | None,
    channels,
    fc,
    num_positions,
    dropout,
    extra_conv,
    batch_norm,
    transform="affine",
    loc_channels=(32, 32),
    loc_fc=(32, 32),
    loc_hidden=(32, 32),
    st_layers=4,
    bound=None,
    padding_mode="zeros",
) -> SVHNNet:
    C, H, W = in_shape
    channels = _ints("channels", channels, len(SVHN_CHANNELS))
    fc = _ints("fc", fc)
    if not 0.0 <= float(dropout) < 1.0:
        raise OptionError(f"dropout must be in [0, 1), got {dropout!r}")
    if H < 16 or W < 16:
        raise ShapeError(f"the SVHN CNN needs inputs of at least 16x16 (four 2x pools), got {H}x{W}")
    widths = channels + ((channels[-1],) if extra_conv else ())
    convs: list[nn.Module] = []
    prev = C
    for k, c in enumerate(widths):
        layers: list[nn.Module] = [nn.Conv2d(prev, c, 5, padding=2)]
        layers += [nn.BatchNorm2d(c)] if batch_norm else []
        layers += [nn.ReLU(inplace=True)]
        layers += [nn.MaxPool2d(2)] if k in POOL_AFTER else []
        layers += [nn.Dropout(dropout)] if k > 0 and dropout > 0 else []  # not on the first conv
        convs.append(nn.Sequential(*layers))
        prev = c
    # input shape of every conv block (for the transformers' localisation nets and the FC layer)
    shapes = [(C, H, W)]
    for k, c in enumerate(widths):
        h, w = shapes[-1][1:]
        shapes.append((c, h // 2, w // 2) if k in POOL_AFTER else (c, h, w))
    before: list[nn.Module] = [nn.Identity() for _ in widths]
    st_kw = {"bound": bound, "padding_mode": padding_mode}
    if st == "single":
        before[0] = SpatialTransformer(single_localisation(C, (H, W), loc_channels, loc_fc), transform, **st_kw)
    elif st == "multi":
        if isinstance(st_layers, bool) or not isinstance(st_layers, int) or not 1 <= st_layers <= len(widths):
            raise OptionError(f"st_layers must be an int in 1..{len(widths)}, got {st_layers!r}")
        hidden = _ints("loc_hidden", loc_hidden)
        for k in range(st_layers):
            c, h, w = shapes[k]
            before[k] = SpatialTransformer(fc_localisation(c * h * w, hidden), transform, **st_kw)
    fc_layers: list[nn.Module] = [nn.Flatten()]
    flat = shapes[-1][0] * shapes[-1][1] * shapes[-1][2]
    for f in fc:
        fc_layers += [nn.Linear(flat, f), nn.ReLU(inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        flat = f
    heads = nn.Linear(flat, num_positions * num_classes)
    for layer in [*convs, *fc_layers]:  # He init: the default init fades through 10 plain ReLU layers
        for m in layer.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:  # every layer here has one; Linear/Conv2d type it as optional
                    nn.init.zeros_(m.bias)
    arch = {
        "name": name,
        "transform": transform if st else None,
        "channels": widths,
        "fc": fc,
        "st_layers": (st_layers if st == "multi" else (1 if st else 0)),
        "dropout": float(dropout),
    }
    return SVHNNet(convs, before, nn.Sequential(*fc_layers), heads, num_positions, num_classes, arch)


@register_model("svhn_cnn")
def svhn_cnn(
    in_shape: Sequence[int] = (3, 64, 64),
    num_classes: int = 11,
    *,
    channels: Sequence[int] = SVHN_CHANNELS,
    fc: Sequence[int] = SVHN_FC,
    num_positions: int = 5,
    dropout: float = 0.5,
    extra_conv: bool = False,
    batch_norm: bool = False,
) -> SVHNNet:
    """The paper's SVHN CNN: logits ``(B, num_positions, num_classes)``; ``num_classes`` counts the null class.
    ``channels`` (8 conv widths) and ``fc`` shrink it (tests, CPU runs); ``batch_norm`` is not the paper's.

    Example:
        >>> with torch.device("meta"):  # shapes only
        ...     sum(p.numel() for p in svhn_cnn().parameters())
        23380695
    """
    return _build(
        "svhn_cnn",
        in_shape,
        num_classes,
        st=None,
        channels=channels,
        fc=fc,
        num_positions=num_positions,
        dropout=dropout,
        extra_conv=extra_conv,
        batch_norm=batch_norm,
    )


@register_model("svhn_st_cnn_single")
def svhn_st_cnn_single(
    in_shape: Sequence[int] = (3, 64, 64),
    num_classes: int = 11,
    *,
    transform: str = "affine",
    channels: Sequence[int] = SVHN_CHANNELS,
    fc: Sequence[int] = SVHN_FC,
    num_positions: int = 5,
    dropout: float = 0.5,
    extra_conv: bool = False,
    batch_norm: bool = False,
    loc_channels: Sequence[int] = (32, 32),
    loc_fc: Sequence[int] = (32, 32),
    bound: float | None = None,
    padding_mode: str = "zeros",
) -> SVHNNet:
    """ST-CNN Single: one spatial transformer on the input (localisation: :func:`single_localisation`).

    Example:
        >>> m = svhn_st_cnn_single(channels=(8,) * 8, fc=(16, 16))
        >>> m(torch.rand(2, 3, 64, 64)).shape, [type(s).__name__ for s in m.st][:2]
        (torch.Size([2, 5, 11]), ['SpatialTransformer', 'Identity'])
    """
    return _build(
        "svhn_st_cnn_single",
        in_shape,
        num_classes,
        st="single",
        channels=channels,
        fc=fc,
        num_positions=num_positions,
        dropout=dropout,
        extra_conv=extra_conv,
        batch_norm=batch_norm,
        transform=transform,
        loc_channels=loc_channels,
        loc_fc=loc_fc,
        bound=bound,
        padding_mode=padding_mode,
    )


@register_model("svhn_st_cnn_multi")
def svhn_st_cnn_multi(
    in_shape: Sequence[int] = (3, 64, 64),
    num_classes: int = 11,
    *,
    transform: str = "affine",
    channels: Sequence[int] = SVHN_CHANNELS,
    fc: Sequence[int] = SVHN_FC,
    num_positions: int = 5,
    dropout: float = 0.5,
    extra_conv: bool = False,
    batch_norm: bool = False,
    loc_hidden: Sequence[int] = (32, 32),
    st_layers: int = 4,
    bound: float | None = None,
    padding_mode: str = "zeros",
) -> SVHNNet:
    """ST-CNN Multi: a spatial transformer before each of the first ``st_layers`` (4) conv layers, on the feature
    maps, each with an FC localisation net of ``loc_hidden`` units (2 x 32).

    Example:
        >>> m = svhn_st_cnn_multi(channels=(8,) * 8, fc=(16, 16))
        >>> [st.localisation[1].in_features for st in m.transformers]  # image, then feature maps
        [12288, 8192, 8192, 2048]
    """
    return _build(
        "svhn_st_cnn_multi",
        in_shape,
        num_classes,
        st="multi",
        channels=channels,
        fc=fc,
        num_positions=num_positions,
        dropout=dropout,
        extra_conv=extra_conv,
        batch_norm=batch_norm,
        transform=transform,
        loc_hidden=loc_hidden,
        st_layers=st_layers,
        bound=bound,
        padding_mode=padding_mode,
    )


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the ``P`` heads of the cross-entropy, averaged over the batch: ``logits (B, P, K)``, ``labels (B, P)``.

    Raises:
        ShapeError: shapes that do not match.

    Example:
        >>> logits = torch.zeros(2, 5, 11)
        >>> round(float(sequence_loss(logits, torch.full((2, 5), 10))), 4)  # 5 * log(11)
        11.9895
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ShapeError(
            f"logits (B, P, K) and labels (B, P) needed, got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    B = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum") / B


def sequence_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: every head right (null classes included)."""
    return (logits.argmax(-1) == labels).all(-1)


def sequence_error(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of sequences with at least one wrong head (the paper's Table 2 metric, as a fraction).

    Example:
        >>> labels = torch.tensor([[1, 2, 10, 10, 10], [3, 10, 10, 10, 10]])
        >>> logits = torch.nn.functional.one_hot(labels, 11).float()
        >>> logits[1, 1] = torch.nn.functional.one_hot(torch.tensor(4), 11)  # a 2nd digit where there is none
        >>> sequence_error(logits, labels)
        0.5
    """
    return 1.0 - sequence_correct(logits, labels).float().mean().item()
