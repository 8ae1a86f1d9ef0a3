"""Deep Descriptor Transforming (DDT; Wei, Luo, Wu and Zhou, IJCAI 2017) on the co-localisation set: where the
common object of the ``n`` images is, from the frozen encoder alone, with no box and no label.

DDT reads the encoder's last conv block over each whole canvas (the CNN is fully convolutional up to its first
``Flatten``), pools the descriptors of every position of every image of the set, and takes their first principal
direction: the direction in which descriptors vary most across the set. Projected on it, each position scores how
much of *that* content it holds. Clutter pieces and blank canvas differ from image to image; the digit class is what
the set has in common, so the positive side of the map lies on the digits. The eigenvector's sign is arbitrary: we
take the side that goes with activation (the map correlated positively with the descriptors' norm), since the digit
is where the encoder fires and the blank canvas, the largest part of every image, is where it does not.

:func:`ddt_maps` gives the maps, :func:`ddt_centres` the centre of the best window of a given size on each map (a box
filter, then the arg-max), in the normalised coordinates of an attention window's ``(tx, ty)``. The co-localisation
task uses them as a guide for the windows during the coarse phase (``task.guide = "ddt"``,
:class:`~torchstn.experiments.colocalisation.task.Options`): the windows are still learned by the triplet loss.
"""

from __future__ import annotations

import torch
from torch import nn

from torchstn.errors import OptionError, ShapeError
from torchstn.experiments.colocalisation.encoder import Encoder

__all__ = ["conv_descriptors", "ddt_maps", "ddt_centres", "ddt_boxes"]


def conv_descriptors(encoder: Encoder, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """The encoder's last conv block (after its max-pool) on whole images ``(N, C, H, W)`` of any size ->
    ``(N, D, h, w)``, without gradient, in batches of ``batch_size``.

    Raises:
        ShapeError: ``images`` not 4-D, or too small for the encoder's convolutions.
    """
    if images.dim() != 4:
        raise ShapeError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    layers = list(encoder.net)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    conv = nn.Sequential(*layers[: pools[-1] + 1])
    size = tuple(int(v) for v in images.shape[-2:])
    for layer in conv:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            size = _out_size(layer, size)
            if min(size) < 1:
                raise ShapeError(f"images {tuple(images.shape[-2:])} are too small for the encoder's convolutions")
    param = next(encoder.parameters())
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            out.append(conv(images[start : start + batch_size].to(param.device, param.dtype)))
    return torch.cat(out)


def ddt_maps(encoder: Encoder, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """DDT maps ``(N, h, w)`` of a set of images ``(N, C, H, W)`` (one image set: the principal direction is the
    set's): each position's descriptor minus the set's mean descriptor, projected on the first eigenvector of the
    descriptors' covariance, signed so that the map goes with the descriptors' norm (see the module docstring).

    Raises:
        ShapeError: ``images`` not 4-D, or fewer than 2 descriptors in all.
    """
    f = conv_descriptors(encoder, images, batch_size).double()  # (N, D, h, w)
    N, D, h, w = f.shape
    d = f.permute(0, 2, 3, 1).reshape(-1, D)  # (N h w, D)
    if d.shape[0] < 2:
        raise ShapeError(f"DDT needs at least 2 descriptors, got {d.shape[0]} from images {tuple(images.shape)}")
    centred = d - d.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred / (d.shape[0] - 1))  # ascending eigenvalues
    maps = (centred @ vectors[:, -1]).view(N, h, w)
    if (maps * f.norm(dim=1)).sum() < 0:  # the eigenvector's sign is arbitrary: the side where the encoder fires
        maps = -maps
    return maps.float()


def ddt_centres(maps: torch.Tensor, size: tuple[int, int], box: int) -> torch.Tensor:
    """Centres ``(N, 2)`` as normalised ``(x, y)`` in ``[-1, 1]`` (``align_corners=False``: the image's outer edges
    at +-1, as an attention window's ``(tx, ty)``) of the ``box x box`` pixel window with the largest mean of each
    map ``(N, h, w)`` brought to the images' ``size (H, W)`` (bilinear). Ties go to the first such window.

    Raises:
        ShapeError: ``maps`` not 3-D.
        OptionError: a ``box`` not in ``1..min(H, W)``.
    """
    if maps.dim() != 3:
        raise ShapeError(f"maps must be (N, h, w), got {tuple(maps.shape)}")
    H, W = (int(s) for s in size)
    if not 1 <= int(box) <= min(H, W):
        raise OptionError(f"box must be 1..{min(H, W)} pixels for {H}x{W} images, got {box}")
    box = int(box)
    full = nn.functional.interpolate(maps[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)
    means = nn.functional.avg_pool2d(full, box, stride=1)[:, 0]  # (N, H - box + 1, W - box + 1): by top-left
    where = means.flatten(1).argmax(1)
    top, left = where // means.shape[-1], where % means.shape[-1]
    centre = torch.stack((left, top), dim=1).float() + box / 2.0  # pixel-edge coordinates
    return centre / torch.tensor([W, H], dtype=torch.float32) * 2.0 - 1.0


def ddt_boxes(centres: torch.Tensor, size: tuple[int, int], box: int) -> torch.Tensor:
    """The ``box x box`` pixel boxes ``(N, 4)`` ``(x1, y1, x2, y2)`` (pixel edges, as :func:`~torchstn.
    experiments.colocalisation.boxes.attention_boxes`) centred on normalised ``centres (N, 2)``."""
    H, W = (int(s) for s in size)
    pixel = (centres + 1.0) / 2.0 * torch.tensor([W, H], dtype=centres.dtype)
    return torch.cat((pixel - box / 2.0, pixel + box / 2.0), dim=1)


def _out_size(layer: nn.Conv2d | nn.MaxPool2d, size: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial size after ``layer`` (a conv or max-pool) of an input of spatial ``size``."""

    def pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
        return (v, v) if isinstance(v, int) else tuple(v)

    kernel, stride, padding, dilation = (
        pair(getattr(layer, k)) for k in ("kernel_size", "stride", "padding", "dilation")
    )
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)
    )
