"""The building blocks of the co-localisation experiment (:mod:`torchstn.experiments.colocalisation`): the
coarse-to-fine attention window and its head, the triplet losses, boxes and IoU, the frozen encoder, random crops.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from torchstn._checks import look_up_option
from torchstn.coords import pixel_from_normalised
from torchstn.errors import OptionError, ShapeError
from torchstn.nn import SpatialTransformer
from torchstn.points import transform_boxes

__all__ = ["FEATURES", "CROP", "Window", "triplet_loss", "colocalisation_loss", "box_iou", "attention_boxes",
           "Encoder", "load_encoder", "WindowHead", "localiser", "random_crops"]

#: What :class:`Encoder` reads: every conv block and the logits joined, the last conv block, the logits, softmax.
FEATURES = ("concat", "penultimate", "logits", "probs")
CROP = 28


@dataclasses.dataclass(frozen=True)
class Window:
    """The attention window's scale bounds and their coarse-to-fine schedule (normalised half-sizes: 1/3 = 28 px on
    an 84 px canvas). The bounds start at ``coarse``, hold, then move linearly to ``fine`` between the fractions
    ``zoom`` of training.

    Attributes:
        start_scale: where every window starts (zero weights): the central window of this half-size.
        coarse, fine: ``(min, max)`` scale at the start and at the end.
        zoom: fractions of training between which the bounds move from ``coarse`` to ``fine``.
        antialias: sample with :func:`torchstn.sample`'s anti-aliasing (a 56 px window is read at 28 px).

    Example:
        >>> w = Window()
        >>> w.scale_at(0, 200), w.scale_at(130, 200), w.scale_at(200, 200)
        ((0.5, 0.67), (0.4, 0.535), (0.3, 0.4))
    """

    start_scale: float = 0.6
    coarse: tuple[float, float] = (0.5, 0.67)
    fine: tuple[float, float] = (0.3, 0.4)
    zoom: tuple[float, float] = (0.5, 0.8)
    antialias: bool = True

    def scale_at(self, step: int, steps: int) -> tuple[float, float]:
        a, b = (f * steps for f in self.zoom)
        t = min(1.0, max(0.0, (step - a) / max(b - a, 1e-9)))
        lo, hi = (round(c + t * (f - c), 12) for c, f in zip(self.coarse, self.fine))
        return lo, hi


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, alpha: float = 1.0,
                 reduction: str = "sum") -> torch.Tensor:  # fmt: skip
    """The triplet hinge ``max(0, |anchor - positive|^2 - |anchor - negative|^2 + alpha)`` over the last dim.

    Args:
        anchor, positive, negative: features ``(..., F)``, broadcast against each other.
        alpha: the margin.
        reduction: ``"sum"`` (the paper), ``"mean"`` or ``"none"`` (shape ``(...)``).

    Example:
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
        >>> triplet_loss(a, p, n), triplet_loss(a, n, p)  # 1 - 9 + 1 -> 0; 9 - 1 + 1
        (tensor(0.), tensor(9.))
    """
    look_up_option("reduction", reduction, ("sum", "mean", "none"))
    d_pos = (anchor - positive).pow(2).sum(-1)
    d_neg = (anchor - negative).pow(2).sum(-1)
    loss = (d_pos - d_neg + alpha).clamp_min(0.0)
    return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss


def colocalisation_loss(features: torch.Tensor, rand_features: torch.Tensor, alpha: float = 1.0,
                        reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """The paper's co-localisation loss: :func:`triplet_loss` with anchor ``e(T(I_n))``, positive ``e(T(I_m))`` and
    negative ``e(I_n^rand)`` for every ordered pair ``n != m`` of the set.

    Args:
        features: ``(N, F)`` encodings of the ST crops ``e(T(I_n))``.
        rand_features: ``(N, F)`` encodings of the random crops ``e(I_n^rand)``.
        reduction: ``"sum"`` over the ``N (N - 1)`` triplets (the paper) or ``"mean"`` over them.

    Raises:
        ShapeError: shapes that are not two equal ``(N, F)`` with ``N >= 2``.

    Example:
        >>> f, r = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [1.0]])
        >>> colocalisation_loss(f, r, reduction="sum")  # n=0: 1 - 9 + 1 -> 0; n=1: 1 - 0 + 1 = 2
        tensor(2.)
    """
    look_up_option("reduction", reduction, ("sum", "mean"))
    if features.dim() != 2 or features.shape != rand_features.shape or features.shape[0] < 2:
        raise ShapeError(f"features and rand_features must both be (N, F) with N >= 2, got "
                         f"{tuple(features.shape)} and {tuple(rand_features.shape)}")  # fmt: skip
    N = features.shape[0]
    sq = features.pow(2).sum(-1)  # (N,)
    d_pos = (sq[:, None] + sq[None, :] - 2.0 * features @ features.T).clamp_min(0.0)  # (N, N): |f_n - f_m|^2
    d_neg = (features - rand_features).pow(2).sum(-1)  # (N,)
    hinge = (d_pos - d_neg[:, None] + alpha).clamp_min(0.0)  # (N, N), row n = anchor n
    off_diagonal = ~torch.eye(N, dtype=torch.bool, device=features.device)
    total = hinge[off_diagonal].sum()
    return total if reduction == "sum" else total / (N * (N - 1))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes ``(..., 4)`` as ``(x1, y1, x2, y2)``, element-wise with broadcasting
    (``box_iou(a[:, None], b[None])`` is torchvision's pairwise ``(N, M)``). Boxes touching at an edge give 0; a pair
    whose union is empty gives 0.

    Example:
        >>> box_iou(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 3.0, 2.0]))  # 2 / (4 + 4 - 2)
        tensor(0.3333)
    """
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ShapeError(f"boxes must be (..., 4) as (x1, y1, x2, y2), got {tuple(a.shape)} and {tuple(b.shape)}")
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0.0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0.0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0.0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def attention_boxes(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The input windows of attention transforms ``theta (B, 3) = (s, tx, ty)`` as pixel boxes ``(B, 4)``
    ``(x1, y1, x2, y2)`` in pixel-edge coordinates of an input of spatial ``size (H, W)`` (the convention of
    :class:`~torchstn.data.datasets.CoLocalisation` ``.boxes``: column ``c`` covers ``[c, c + 1)``).

    The window is where the output's outer edges (``[-1, 1]^2``) are read (:func:`torchstn.points.transform_boxes`),
    taken to pixel centres with :func:`torchstn.coords.pixel_from_normalised`, then shifted by half a pixel to edges.

    Example:
        >>> attention_boxes(torch.tensor([[1 / 3, 0.0, 0.0]]), (84, 84))  # the central 28x28 square
        tensor([[28., 28., 56., 56.]])
    """
    if theta.dim() != 2 or theta.shape[-1] != 3:
        raise ShapeError(f"theta must be (B, 3) as (s, tx, ty), got {tuple(theta.shape)}")
    whole = theta.new_tensor([-1.0, -1.0, 1.0, 1.0]).expand(theta.shape[0], 1, 4)  # (B, 1, 4) the output's edges
    window = transform_boxes("attention", theta, whole)[:, 0].double()  # (B, 4) normalised, in the input
    to_pixel = pixel_from_normalised(tuple(size), device=theta.device)  # (3, 3), pixel centres at integers
    corners = window.view(-1, 2, 2)  # (B, 2 corners, (x, y))
    centres = corners @ to_pixel[:2, :2].T + to_pixel[:2, 2]  # (B, 2, 2)
    return (centres + 0.5).view(-1, 4).to(theta.dtype)


class Encoder(nn.Module):
    """The frozen encoder ``e()``: a trained MNIST CNN (:func:`torchstn.models.mnist.cnn`) read at one depth.

    ``features``: ``"concat"`` (default: each conv block's pooled activations and the logits, joined; the paper's
    "activations concatenated"), ``"penultimate"`` (the last conv block), ``"logits"`` or ``"probs"`` (softmax).
    ``normalise`` divides each vector by its L2 norm, so squared distances lie in ``[0, 4]`` and the margin
    ``alpha = 1`` is on their scale. The parameters do not learn and the module stays in eval mode.

    Raises:
        OptionError: a model that is not the paper's CNN, or an unknown ``features``.

    Example:
        >>> from torchstn.models.mnist import cnn
        >>> e = Encoder(cnn((1, 28, 28), channels=(4, 4)))
        >>> f = e(torch.rand(3, 1, 28, 28))
        >>> f.shape, bool(torch.allclose(f.norm(dim=1), torch.ones(3))), e.training
        (torch.Size([3, 990]), True, False)
    """

    def __init__(self, model: nn.Module, features: str = "concat", normalise: bool = True):
        super().__init__()
        self.features = look_up_option("features", features, FEATURES)
        self.normalise = bool(normalise)
        self.source: str | None = None  # where it was loaded from (recorded with each run)
        net = getattr(model, "classifier", model)
        if not (isinstance(net, nn.Sequential) and len(net) >= 2 and isinstance(net[-1], nn.Linear)
                and isinstance(net[-2], nn.Flatten)):  # fmt: skip
            raise OptionError("the encoder must be the paper's CNN (a Sequential ending in Flatten, Linear), got "
                              f"{type(net).__name__}")  # fmt: skip
        if not isinstance(getattr(model, "st", nn.Identity()), nn.Identity):
            raise OptionError("the encoder must be a CNN without a spatial transformer")
        self.net = net
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:  # frozen: always in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                blocks.append(x.flatten(1))  # (B, C * h * w)
        logits = x  # (B, num_classes)
        out = {"concat": lambda: torch.cat(blocks + [logits], dim=1), "penultimate": lambda: blocks[-1],
               "logits": lambda: logits, "probs": lambda: logits.softmax(dim=1)}[self.features]()  # fmt: skip
        return nn.functional.normalize(out, dim=1) if self.normalise else out  # (B, F)

    def extra_repr(self) -> str:
        return f"features={self.features!r}, normalise={self.normalise}"


def load_encoder(path: str | Path, features: str = "concat", normalise: bool = True) -> Encoder:
    """An :class:`Encoder` from a run directory or checkpoint of ``torchstn train colocalisation_encoder``.

    Raises:
        DataError: a missing or damaged checkpoint.
    """
    from torchstn.experiments.engine.runs import checkpoint_path
    from torchstn.experiments.engine.runs import load_run as load_training_run

    _, model, _ = load_training_run(path)
    encoder = Encoder(model, features, normalise)
    encoder.source = str(checkpoint_path(path))
    return encoder


class WindowHead(nn.Module):
    """Regression head ``features (B, F) -> theta (B, 3) = (s, tx, ty)`` of a window kept inside the image:
    ``s = lo + (hi - lo) * sigmoid(a + a0)``, ``(tx, ty) = (1 - s) * tanh(b, c)`` for the linear outputs ``(a, b, c)``.
    The linear layer starts at zero weights and bias (the paper's identity initialisation, moved to the central
    window of half-size ``start_scale``). The bounds ``(lo, hi)`` are the buffer ``scale``, which training may move
    (coarse to fine; :class:`Window`).

    Example:
        >>> head = WindowHead(8, start_scale=0.6, scale=(0.3, 0.67))
        >>> head(torch.randn(2, 8))[0]
        tensor([0.6000, 0.0000, 0.0000], grad_fn=<SelectBackward0>)
    """

    def __init__(self, in_features: int, start_scale: float = 0.6, scale: Sequence[float] = (0.3, 0.67)):
        super().__init__()
        lo, hi = (float(v) for v in scale)
        if not 0 < lo < start_scale < hi <= 1:
            raise OptionError(f"need 0 < min scale < start_scale < max scale <= 1, got start_scale={start_scale}, "
                              f"scale={tuple(scale)}")  # fmt: skip
        self.start_scale = float(start_scale)
        self.offset = math.log((start_scale - lo) / (hi - start_scale))  # sigmoid(offset) = (start - lo) / (hi - lo)
        self.register_buffer("scale", torch.tensor([lo, hi]))
        self.linear = nn.Linear(int(in_features), 3)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raw = self.linear(features.flatten(1))  # (B, 3)
        lo, hi = self.scale.to(raw.dtype).unbind()
        s = lo + (hi - lo) * torch.sigmoid(raw[:, :1] + self.offset)  # (B, 1)
        return torch.cat((s, (1.0 - s) * torch.tanh(raw[:, 1:])), dim=1)  # (B, 3)

    def extra_repr(self) -> str:
        return f"start_scale={self.start_scale:.4g}"


def localiser(in_size: Sequence[int] = (84, 84), window: Window = Window()) -> SpatialTransformer:
    """The paper's co-localisation ST: localisation conv 8 filters 9x9 stride 4 -> max-pool 2 -> FC 8 -> FC 8 -> FC 3
    (ReLU), attention transform, 28x28 output; the last FC is a :class:`WindowHead` with ``window``'s bounds.

    Example:
        >>> st = localiser()
        >>> crops, theta = st(torch.rand(2, 1, 84, 84), return_theta=True)
        >>> crops.shape, theta[0]
        (torch.Size([2, 1, 28, 28]), tensor([0.6000, 0.0000, 0.0000], grad_fn=<SelectBackward0>))
    """
    H, W = (int(s) for s in in_size)
    h, w = ((H - 9) // 4 + 1) // 2, ((W - 9) // 4 + 1) // 2
    if h < 1 or w < 1:
        raise ShapeError(f"the co-localisation localiser needs inputs of at least 17x17, got {H}x{W}")
    loc = nn.Sequential(
        nn.Conv2d(1, 8, 9, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(),  # (B, 8 * h * w)
        nn.Linear(8 * h * w, 8), nn.ReLU(inplace=True),
        nn.Linear(8, 8), nn.ReLU(inplace=True),
    )  # fmt: skip
    return SpatialTransformer(loc, "attention", out_size=(CROP, CROP), antialias=window.antialias,
                              head=WindowHead(8, window.start_scale, window.coarse))


def random_crops(images: torch.Tensor, generator: torch.Generator, size: int = CROP) -> torch.Tensor:
    """One uniformly placed ``size x size`` crop of each image ``(N, C, H, W) -> (N, C, size, size)`` (whole pixels,
    inside the image): the paper's ``I^rand``.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> random_crops(x, torch.Generator().manual_seed(0), size=3).shape
        torch.Size([1, 1, 3, 3])
    """
    N, _, H, W = images.shape
    if size > H or size > W:
        raise ShapeError(f"crop size {size} exceeds the images' {H}x{W}")
    y0 = torch.randint(0, H - size + 1, (N,), generator=generator)
    x0 = torch.randint(0, W - size + 1, (N,), generator=generator)
    step = torch.arange(size)
    rows, cols = (y0[:, None] + step).to(images.device), (x0[:, None] + step).to(images.device)  # (N, size)
    index = torch.arange(N, device=images.device)[:, None, None]
    crops = images.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (N, size, size, C)
    return crops.permute(0, 3, 1, 2)
