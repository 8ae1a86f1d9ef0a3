"""The paper's CUB-200-2011 models (§4.3, Table 3): a CNN and N parallel attention transformers with part networks.

**Backbones** (:mod:`torchstn.experiments.cub.backbones`) are pluggable: :func:`build_backbone` gives
``(module, feature_dim)`` for ``"tiny"``, ``"torchvision:<arch>"``, ``"timm:<name>"``, a name registered with
:func:`register_backbone` or a callable; pretrained weights are never downloaded (``weights=PATH``).

**Parts** (``cub_st_cnn``): N spatial transformers of the family :class:`FixedScaleTranslation` (the attention
transform ``[[s, 0, tx], [0, s, ty]]`` with ``s`` fixed, default 0.5: each crop covers half the image's width and
height; only ``(tx, ty)`` is predicted), sampled at ``part_size`` (224): on a 448px input a 224px window read at
224px. Their *starting* positions tile the image (:func:`tile_centres`: 2 parts = left / right halves, 4 = the four
quadrants); each transformer's regression layer starts at zero weights with its tile centre as bias. One shared
localisation network (a backbone on the input resized to ``loc_size``) feeds every transformer's own regression
layer (our reading [?]: the paper does not say whether the localisation nets share a trunk). Each crop goes to its
own part network (a backbone; ``share_parts=True`` shares one), the features are concatenated, dropout (0.7), one
linear softmax layer. Use :func:`cub_param_groups` for the optimiser: it gives the shared localisation backbone the
localisation learning rate too (the paper: 1e-4 of the base).

Example:
    >>> model = cub_st_cnn((3, 64, 64), 5, num_parts=4, part_size=32, loc_size=32)
    >>> model(torch.rand(2, 3, 64, 64)).shape, len(model.transformers)
    (torch.Size([2, 5]), 4)
    >>> model.part_boxes(torch.rand(1, 3, 64, 64))[0]  # the quadrants at init, normalised (x1, y1, x2, y2)
    tensor([[-1., -1.,  0.,  0.],
            [ 0., -1.,  1.,  0.],
            [-1.,  0.,  0.,  1.],
            [ 0.,  0.,  1.,  1.]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.errors import OptionError
from torchstn.experiments.cub.backbones import (
    BACKBONES,
    build_backbone,
    list_backbones,
    register_backbone,
    tiny_backbone,
)
from torchstn.models.registry import register_model
from torchstn.nn import SpatialTransformer, param_groups
from torchstn.points import transform_boxes
from torchstn.transforms import FixedScaleTranslation

__all__ = [
    "register_backbone",
    "build_backbone",
    "list_backbones",
    "tiny_backbone",
    "FixedScaleTranslation",
    "tile_centres",
    "CUBNet",
    "CUBPartsNet",
    "cub_cnn",
    "cub_st_cnn",
    "cub_param_groups",
    "CUB_MODELS",
    "BACKBONES",
]

CUB_MODELS = ("cub_cnn", "cub_st_cnn")


def tile_centres(n: int, scale: float) -> list[tuple[float, float]]:
    """Centres ``(x, y)`` of ``n`` windows of half-size ``scale`` tiling the image: ``rows = floor(sqrt(n))``,
    ``cols = ceil(n / rows)``, centres evenly spaced within ``[-(1 - scale), 1 - scale]``, row by row.

    Example:
        >>> tile_centres(2, 0.5), tile_centres(4, 0.5)[:2]
        ([(-0.5, 0.0), (0.5, 0.0)], [(-0.5, -0.5), (0.5, -0.5)])
    """
    rows = max(1, math.isqrt(n))
    cols = math.ceil(n / rows)
    span = 1.0 - scale

    def pos(i: int, k: int) -> float:
        return 0.0 if k == 1 else -span + 2 * span * i / (k - 1)

    return [(pos(j % cols, cols), pos(j // cols, rows)) for j in range(n)]


class CUBNet(nn.Module):
    """``logits = classifier(dropout(backbone(x)))``: the paper's CNN baseline."""

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int, dropout: float, arch: dict | None = None):
        super().__init__()
        self.backbone, self.dropout, self.classifier = backbone, nn.Dropout(dropout), nn.Linear(dim, num_classes)
        self.arch = dict(arch or {})
        self.transformers: list[SpatialTransformer] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.backbone(x)))  # (B, K)


class CUBPartsNet(nn.Module):
    """N parallel fixed-scale attention transformers with a shared localisation backbone and part networks.

    ``forward(x (B, 3, H, W)) -> logits (B, K)``; :meth:`part_boxes` gives the windows each transformer picks.
    """

    def __init__(
        self,
        localisation: nn.Module,
        transformers: Sequence[SpatialTransformer],
        parts: Sequence[nn.Module],
        classifier: nn.Linear,
        *,
        loc_size: int | None,
        dropout: float,
        arch: dict | None = None,
    ):
        super().__init__()
        self.localisation = localisation
        self.sts = nn.ModuleList(transformers)
        self.parts = nn.ModuleList(parts)
        self.dropout, self.classifier = nn.Dropout(dropout), classifier
        self.loc_size = loc_size
        self.arch = dict(arch or {})

    @property
    def transformers(self) -> list[SpatialTransformer]:
        # nn.ModuleList is not generic in torch's annotations; __init__ fills this one with spatial transformers only
        return cast("list[SpatialTransformer]", list(self.sts))

    def localisation_features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared localisation features ``(B, D)`` of images ``(B, 3, H, W)`` (resized to ``loc_size``)."""
        if self.loc_size is not None and tuple(x.shape[-2:]) != (self.loc_size, self.loc_size):
            x = F.interpolate(
                x, size=(self.loc_size, self.loc_size), mode="bilinear", align_corners=False, antialias=True
            )
        return self.localisation(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.localisation_features(x)  # (B, D)
        crops = [st(x, loc_input=feats) for st in self.sts]  # N x (B, 3, P, P)
        parts = self.parts if len(self.parts) == len(crops) else [self.parts[0]] * len(crops)
        f = torch.cat([part(c) for part, c in zip(parts, crops)], dim=1)  # (B, N * D_part)
        return self.classifier(self.dropout(f))

    @torch.no_grad()
    def part_boxes(self, x: torch.Tensor) -> torch.Tensor:
        """The windows ``(B, N, 4)`` as normalised ``(x1, y1, x2, y2)`` in the input (``-1``/``1``: its edges)."""
        feats = self.localisation_features(x)
        whole = torch.tensor([[[-1.0, -1.0, 1.0, 1.0]]], dtype=x.dtype, device=x.device).expand(x.shape[0], 1, 4)
        return torch.cat(
            [transform_boxes(st.family, st.predict_theta(feats), whole) for st in self.transformers], dim=1
        )


@register_model("cub_cnn")
def cub_cnn(
    in_shape: Sequence[int] = (3, 224, 224),
    num_classes: int = 200,
    *,
    backbone: str = "tiny",
    weights: str | None = None,
    allow_random_init: bool = False,
    dropout: float = 0.7,
    backbone_options: dict | None = None,
) -> CUBNet:
    """The CNN baseline: a backbone on the whole image, dropout, a linear classifier (Table 3 row "CNN", 224px).

    Example:
        >>> cub_cnn((3, 32, 32), 3)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """
    net, dim = build_backbone(
        backbone, weights=weights, allow_random_init=allow_random_init, **(backbone_options or {})
    )
    arch = {"name": "cub_cnn", "backbone": str(backbone), "dropout": float(dropout)}
    return CUBNet(net, dim, num_classes, dropout, arch)


@register_model("cub_st_cnn")
def cub_st_cnn(
    in_shape: Sequence[int] = (3, 448, 448),
    num_classes: int = 200,
    *,
    num_parts: int = 2,
    scale: float = 0.5,
    part_size: int = 224,
    loc_size: int | None = 224,
    backbone: str = "tiny",
    weights: str | None = None,
    loc_backbone: str | None = None,
    loc_weights: str | None = None,
    allow_random_init: bool = False,
    dropout: float = 0.7,
    share_parts: bool = False,
    mode: str = "bilinear",
    backbone_options: dict | None = None,
) -> CUBPartsNet:
    """N x ST-CNN (``num_parts`` 2 or 4 in the paper): see the module docstring. ``loc_backbone`` / ``loc_weights``
    default to ``backbone`` / ``weights``; ``loc_size=None`` runs the localisation net on the full input.

    Example:
        >>> m = cub_st_cnn((3, 64, 64), 3, part_size=32, loc_size=None)
        >>> [st.family.centre for st in m.transformers], m.transformers[0].out_size
        ([(-0.5, 0.0), (0.5, 0.0)], (32, 32))
    """
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise OptionError(f"num_parts must be a positive int, got {num_parts!r}")
    opts = dict(backbone_options or {})
    loc_name = backbone if loc_backbone is None else loc_backbone
    loc_w = weights if loc_backbone is None and loc_weights is None else loc_weights
    loc_net, loc_dim = build_backbone(loc_name, weights=loc_w, allow_random_init=allow_random_init, **opts)
    sts = [
        SpatialTransformer(
            nn.Identity(), FixedScaleTranslation(scale, c), out_size=part_size, in_features=loc_dim, mode=mode
        )
        for c in tile_centres(num_parts, scale)
    ]
    n_nets = 1 if share_parts else num_parts
    built = [
        build_backbone(backbone, weights=weights, allow_random_init=allow_random_init, **opts) for _ in range(n_nets)
    ]
    dim = built[0][1]
    arch = {
        "name": "cub_st_cnn",
        "num_parts": num_parts,
        "scale": float(scale),
        "part_size": part_size,
        "loc_size": loc_size,
        "backbone": str(backbone),
        "loc_backbone": str(loc_name),
        "dropout": float(dropout),
    }
    return CUBPartsNet(
        loc_net,
        sts,
        [b[0] for b in built],
        nn.Linear(num_parts * dim, num_classes),
        loc_size=loc_size,
        dropout=dropout,
        arch=arch,
    )


def cub_param_groups(model: nn.Module, lr: float, loc_lr_mult: float, **options) -> list[dict]:
    """:func:`torchstn.param_groups` with a :class:`CUBPartsNet`'s shared localisation backbone moved into the
    localisation group (``lr * loc_lr_mult``).

    Example:
        >>> m = cub_st_cnn((3, 64, 64), 3, part_size=32, loc_size=32)
        >>> groups = cub_param_groups(m, 0.1, 1e-4)
        >>> [g["lr"] for g in groups], len(groups[1]["params"]) == len(list(m.localisation.parameters())) + 4
        ([0.1, 1e-05], True)
    """
    groups = param_groups(model, lr, loc_lr_mult, **options)
    loc = getattr(model, "localisation", None)
    if not isinstance(loc, nn.Module):
        return groups
    moved = {id(p) for p in loc.parameters()}
    groups[0]["params"] = [p for p in groups[0]["params"] if id(p) not in moved]
    extra = [p for p in loc.parameters()]
    if len(groups) == 1:
        groups.append(dict(groups[0], params=[], lr=lr * loc_lr_mult))
    groups[1]["params"] = extra + groups[1]["params"]
    return groups
