"""The paper's distorted-MNIST recipes (§4.1, Appendix A; ``docs/datasets.md``), each ``sample_params`` | ``apply``.

========  ======================================================================================================
variant   recipe (defaults)
========  ======================================================================================================
plain     the digit as it is, 28x28
R         rotation uniform in +-90 deg about the digit centre, 28x28 canvas (``canvas=42`` is the other reading)
RTS       rotation +-45 deg, scale uniform in [0.7, 1.2], placed uniformly on a 42x42 canvas so that the scaled
          28x28 box stays inside (``placement="anywhere"`` lets the digit leave the canvas)
P         zoom out by a scale uniform in [0.75, 1.0], then move each image corner along its diagonal by N(0, 15^2)
          px; the homography through the 4 point pairs (batched DLT solve in float64) warps the image, 28x28; draws
          that fold the quad or squeeze the digit flat are redrawn (``legible``); ``recipe=`` picks another reading of
          the paper's P
          (``legible`` the default, ``radial``, ``ours``, ``stretch``, ``padded``: :data:`P_RECIPES`, :data:`P_SIGMA`)
E         elastic: a thin-plate spline whose 16 control points (4x4 lattice spanning the image) move by N(0, 2^2) px
          (``recipe="zoom"``: P's zoom-out first)
TC        the digit at a random integer position on a 60x60 canvas plus 6 clutter crops of 6x6 from random other
          digits, combined with max (:class:`~torchstn.data.distortions.canvas.TranslateClutter`)
ICSTN     the IC-STN paper's perturbed MNIST: each corner of the square moves by N(0, 0.25^2) plus a shared
          N(0, 0.25^2) translation (normalised units), homography warp, 28x28
          (:class:`~torchstn.data.distortions.icstn.CornerPerturbation`)
========  ======================================================================================================

The interface and its shared helpers are in :mod:`~torchstn.data.distortions.distortion`, the warps (plain, R, RTS,
E) in :mod:`~torchstn.data.distortions.warps`, P, its recipes and the geometry check (:func:`ink_loss_rate`) in
:mod:`~torchstn.data.distortions.projective`, the canvas distortions (TC, 3D) in
:mod:`~torchstn.data.distortions.canvas`, and the variant registry (:data:`DISTORTIONS`, :func:`get_distortion`,
:func:`register_distortion`) in :mod:`~torchstn.data.distortions.registry`.
"""

from torchstn.data.distortions.canvas import Extrude3D, TranslateClutter
from torchstn.data.distortions.distortion import DIGIT, PLACEMENTS, Distortion, select_params, sin_cos
from torchstn.data.distortions.icstn import CornerPerturbation
from torchstn.data.distortions.projective import LEGIBLE_SQUASH, P_RECIPES, P_SIGMA, ink_inside, ink_loss_rate, squash
from torchstn.data.distortions.registry import DISTORTIONS, canonical_variant, get_distortion, register_distortion
from torchstn.data.distortions.warps import Elastic, Plain, ProjectiveJitter, Rotate, RotateTranslateScale

#: The registered variant names (``"plain"``, ``"R"``, ``"RTS"``, ``"P"``, ``"E"``, ``"TC"``, ``"ICSTN"``), sorted.
VARIANTS = tuple(DISTORTIONS.names())

__all__ = [
    "Distortion",
    "Plain",
    "Rotate",
    "RotateTranslateScale",
    "ProjectiveJitter",
    "Elastic",
    "TranslateClutter",
    "CornerPerturbation",
    "Extrude3D",
    "DISTORTIONS",
    "VARIANTS",
    "PLACEMENTS",
    "DIGIT",
    "get_distortion",
    "register_distortion",
    "canonical_variant",
    "select_params",
    "sin_cos",
    "P_RECIPES",
    "LEGIBLE_SQUASH",
    "P_SIGMA",
    "ink_inside",
    "ink_loss_rate",
    "squash",
]
