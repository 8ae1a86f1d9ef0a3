"""Data: MNIST from any machine (local IDX files, our cache, the package registry), the paper's distortions and
dataset classes. Nothing here is imported by the core library."""

from torchstn.data.datasets import (
    TEST_SEED,
    CoLocalisation,
    DistortedMNIST,
    MNISTAddition,
    TensorFile,
    Volume3D,
    synthetic_digits,
)
from torchstn.data.distortions import (
    DISTORTIONS,
    VARIANTS,
    Distortion,
    Elastic,
    Extrude3D,
    Plain,
    ProjectiveJitter,
    Rotate,
    RotateTranslateScale,
    TranslateClutter,
    get_distortion,
)
from torchstn.data.idx import read_idx, write_idx
from torchstn.data.mnist import fetch_mnist, load_mnist

__all__ = [
    "load_mnist", "fetch_mnist", "read_idx", "write_idx",
    "DistortedMNIST", "MNISTAddition", "CoLocalisation", "Volume3D", "TensorFile", "TEST_SEED", "synthetic_digits",
    "DISTORTIONS", "VARIANTS", "Distortion", "Plain", "Rotate", "RotateTranslateScale", "ProjectiveJitter", "Elastic",
    "TranslateClutter", "Extrude3D", "get_distortion",
]
