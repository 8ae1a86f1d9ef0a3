"""The paper's 3D experiment (Appendix A.3): a 3D spatial transformer whose output depth is flattened into a 2D
projection, classified by a 2D CNN, trained end to end from labels only.

- ``st3d_cnn``: a 3D conv localisation net (:func:`~torchstn.nn.conv_localisation` with 3D kernels) predicts a 3D
  transform (``affine3d`` by default) of the ``(C, D, H, W)`` volume; the transformer samples an
  ``out_size`` volume, which is averaged over its depth axis into a ``(C, H', W')`` image for the paper's CNN
  (:func:`~torchstn.models.classifiers.cnn_classifier`). So the network learns *which* projection of the volume to
  look at: the rotation brings the digit's slab face-on and the scale crops it.
- ``proj_cnn``: the baseline without a transformer: the volume is average-pooled by the same factor and averaged
  over depth (the fixed projection along the depth axis), then the same CNN.

The paper gives no widths for this experiment. Ours: the transformer's output is ``in_size // 2`` per axis (30^3 for
60^3 volumes: the digit's 28 voxels fit at full resolution once the transformer zooms in, and the identity start
sees the whole volume); the localisation net works on the volume max-pooled x2 with 8 filters of 5^3 (the paper's
2D net uses 20 filters; 3D kernels cost 5x more per filter); both models fit the CNN's width to the same parameter
budget, the 64/64-channel CNN on the projection, so their counts match.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchstn.errors import OptionError, ShapeError
from torchstn.models.budget import check_widths, fit_width, meta_parameter_count
from torchstn.models.classifiers import cnn_classifier
from torchstn.models.registry import count_parameters, register_model
from torchstn.nn import SpatialTransformer, conv_localisation
from torchstn.transforms import get_transform

__all__ = ["VolumeNet"]


class VolumeNet(nn.Module):
    """``logits = classifier(depth_mean(st(x)))``, or with no transformer ``classifier(depth_mean(pool(x)))``.

    Attributes:
        transformers: the spatial transformers (one, or none for the baseline).
        arch: a dict describing the built model.
    """

    def __init__(self, classifier: nn.Module, st: SpatialTransformer | None, *, pool: int, arch: dict):
        super().__init__()
        self.st = st
        self.pool = nn.AvgPool3d(pool) if (st is None and pool > 1) else nn.Identity()
        self.classifier = classifier
        self.arch = dict(arch)

    @property
    def transformers(self) -> list[SpatialTransformer]:
        return [m for m in self.modules() if isinstance(m, SpatialTransformer)]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The 2D image ``(B, C, H', W')`` the classifier sees: the (transformed) volume averaged over depth."""
        if x.dim() != 5:
            raise ShapeError(f"expected volumes (B, C, D, H, W), got shape {tuple(x.shape)}")
        v = self.st(x) if self.st is not None else self.pool(x)
        return v.mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.project(x))


def _build(
    name: str,
    in_shape: tuple[int, int, int, int],
    num_classes: int,
    *,
    transform: str | None,
    channels: Sequence[int] | None,
    budget: int | None,
    loc_channels: int,
    loc_fc: int,
    st_options: dict | None,
) -> VolumeNet:
    C, D, H, W = in_shape
    pool = 2
    out = (max(1, D // pool), max(1, H // pool), max(1, W // pool))
    st = None
    if transform is not None:
        family = get_transform(transform)
        if 3 not in family.ranks:
            raise OptionError(f"{name} needs a 3D transform family (affine3d, attention3d, ...), got {transform!r}")
        loc = conv_localisation(C, (D, H, W), channels=loc_channels, kernel_size=5, fc=loc_fc, downsample=pool)
        st = SpatialTransformer(loc, transform, out_size=out, **dict(st_options or {}))

    def make(ws: tuple[int, int]) -> nn.Sequential:
        return cnn_classifier(C, out[1:], ws, num_classes)

    if channels is not None:
        ws = check_widths("channels", channels)
    else:
        if budget is None:
            budget = meta_parameter_count(lambda: make((64, 64)))
        st_count = 0 if st is None else count_parameters(st)
        w = fit_width(lambda w: st_count + meta_parameter_count(lambda: make((w, w))), budget)
        ws = (w, w)
    arch = {"name": name, "transform": transform, "out_size": out, "channels": ws, "budget": budget}
    return VolumeNet(make(ws), st, pool=pool, arch=arch)


@register_model("st3d_cnn", spatial_dims=3)
def st3d_cnn(
    in_shape: tuple[int, int, int, int],
    num_classes: int = 10,
    *,
    transform: str = "affine3d",
    channels: Sequence[int] | None = None,
    budget: int | None = None,
    loc_channels: int = 8,
    loc_fc: int = 20,
    st_options: dict | None = None,
) -> VolumeNet:
    """3D ST + depth projection + 2D CNN (Appendix A.3). ``st_options`` go to the
    :class:`~torchstn.nn.SpatialTransformer` (e.g. ``antialias``, ``bound``).

    Example:
        >>> model = st3d_cnn((1, 32, 32, 32))
        >>> model(torch.rand(2, 1, 32, 32, 32)).shape, model.project(torch.rand(2, 1, 32, 32, 32)).shape
        (torch.Size([2, 10]), torch.Size([2, 1, 16, 16]))
    """
    return _build(
        "st3d_cnn",
        in_shape,
        num_classes,
        transform=transform,
        channels=channels,
        budget=budget,
        loc_channels=loc_channels,
        loc_fc=loc_fc,
        st_options=st_options,
    )


@register_model("proj_cnn", spatial_dims=3)
def proj_cnn(
    in_shape: tuple[int, int, int, int],
    num_classes: int = 10,
    *,
    channels: Sequence[int] | None = None,
    budget: int | None = None,
) -> VolumeNet:
    """The 3D experiment's baseline: the volume's fixed projection along depth (average-pooled x2), then the CNN.

    Example:
        >>> proj_cnn((1, 32, 32, 32))(torch.rand(2, 1, 32, 32, 32)).shape
        torch.Size([2, 10])
    """
    return _build(
        "proj_cnn",
        in_shape,
        num_classes,
        transform=None,
        channels=channels,
        budget=budget,
        loc_channels=0,
        loc_fc=0,
        st_options=None,
    )
