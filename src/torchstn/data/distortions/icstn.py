"""ICSTN: the perturbed-MNIST protocol of the IC-STN paper (Lin & Lucey, CVPR 2017, §4.2), as a distortion.

Each of the four corners of the normalised square moves by its own N(0, sigma^2) in x and in y, plus one
N(0, translation^2) shift per image (per axis) shared by the four; the homography through the four point pairs warps
the 28x28 digit (bilinear, zero padding) to 28x28. The defaults ``sigma = translation = 0.25`` are the public code's
``pertScale`` and ``transScale``. In that code the square's corners ``+-1`` are the centres of the image's corner
pixels (its grid is ``linspace(-1, 1, W)``, read with ``align_corners=True``); here, where ``+-1`` are the image's
outer edges, the corners and their moves are scaled by ``(28 - 1) / 28`` so that each output pixel reads the same
input point. What is not reproduced (``docs/icstn.md``): that code gives its IC-STN the undistorted digit and the
perturbation as the starting warp, while its CNN and STN see the perturbed image; here every model sees the
perturbed image, so what the perturbation pushes out of the frame is lost to all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from torchstn.data.distortions.distortion import DIGIT, Distortion, check_positive, warp
from torchstn.data.distortions.registry import register_distortion
from torchstn.transforms import get_transform

__all__ = ["CornerPerturbation", "homography_through"]

_F64 = torch.float64
#: The square's corners ``(4, 2)`` as the public code lists them: (-1, -1), (-1, 1), (1, 1), (1, -1).
CORNERS = ((-1.0, -1.0), (-1.0, 1.0), (1.0, 1.0), (1.0, -1.0))


def homography_through(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The homographies ``(n, 3, 3)`` (``h33 = 1``) mapping the four points ``src (n, 4, 2)`` onto ``dst (n, 4, 2)``,
    from the 8x8 direct linear system, solved in float64.

    Example:
        >>> src = torch.tensor([CORNERS], dtype=torch.float64)
        >>> homography_through(src, src * 0.5 + 0.25)[0].round(decimals=6) + 0.0  # + 0.0: no negative zeros
        tensor([[0.5000, 0.0000, 0.2500],
                [0.0000, 0.5000, 0.2500],
                [0.0000, 0.0000, 1.0000]], dtype=torch.float64)
    """
    src, dst = src.to(_F64), dst.to(_F64)
    n = src.shape[0]
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]  # (n, 4) each
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack((x, y, one, zero, zero, zero, -u * x, -u * y), dim=-1)  # (n, 4, 8)
    rows_v = torch.stack((zero, zero, zero, x, y, one, -v * x, -v * y), dim=-1)
    system = torch.stack((rows_u, rows_v), dim=2).view(n, 8, 8)
    rhs = torch.stack((u, v), dim=2).view(n, 8, 1)
    h = torch.linalg.solve(system, rhs).view(n, 8)
    return torch.cat((h, h.new_ones(n, 1)), dim=1).view(n, 3, 3)


@register_distortion("ICSTN")
class CornerPerturbation(Distortion):
    """ICSTN: the IC-STN paper's perturbed MNIST (see the module docstring).

    ``params``, in draw order: ``corner_shift (n, 4, 2)`` (each corner's own move, normalised units of the public
    code, corners in the order of :data:`CORNERS`), then ``translation (n, 2)`` (the shared move). The output point at
    corner ``c_k`` reads the digit at ``c_k + corner_shift_k + translation`` (both scaled by 27/28, see the module
    docstring); the draws are not redrawn when they fold the quad (the public code does not either).

    Args:
        sigma: standard deviation of each corner's own move (normalised units; 0.25).
        translation: standard deviation of the shared move (0.25).

    Raises:
        OptionError: a negative or non-finite ``sigma`` / ``translation``.

    Example:
        >>> d = CornerPerturbation()
        >>> params = d.sample_params(torch.Generator().manual_seed(0), 3)
        >>> d.matrix(params).shape, d.apply(torch.rand(3, 1, 28, 28), params).shape
        (torch.Size([3, 3, 3]), torch.Size([3, 1, 28, 28]))
    """

    def __init__(self, sigma: float = 0.25, translation: float = 0.25):
        self.sigma = check_positive("sigma", sigma)
        self.translation = check_positive("translation", translation)
        self.out_size = (DIGIT, DIGIT)
        self._family = get_transform("projective")

    def options(self):
        return {"sigma": self.sigma, "translation": self.translation}

    def sample_params(self, generator, n):
        n = self.check_n(n)
        shift = torch.randn((n, 4, 2), generator=generator, dtype=_F64) * self.sigma
        shared = torch.randn((n, 2), generator=generator, dtype=_F64) * self.translation
        return {"corner_shift": shift, "translation": shared}

    def moved_corners(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Where each output corner reads the digit, ``(n, 4, 2)`` in the public code's units (corner pixel centres
        at ``+-1``)."""
        src = torch.tensor(CORNERS, dtype=_F64)
        return src + params["corner_shift"].to(_F64) + params["translation"].to(_F64).unsqueeze(1)

    def matrix(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised output->input homographies ``(n, 3, 3)`` (float64, ``h33 = 1``) in this library's convention
        (``+-1`` the image's edges)."""
        scale = (DIGIT - 1) / DIGIT  # the public code's units -> ours
        dst = self.moved_corners(params) * scale
        src = torch.tensor(CORNERS, dtype=_F64).expand_as(dst) * scale
        return homography_through(src, dst)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        theta = self.matrix(params).reshape(-1, 9)[:, :8]  # (B, 8)
        return warp(images, self._family, theta, self.out_size, compute_dtype)
