"""Data: MNIST from any machine (local IDX files, our cache, the package registry), the paper's distortions and
dataset classes. Nothing here is imported by the core library."""

from torchstn.data.contract import TEST_SEED
from torchstn.data.datasets import CoLocalisation, DistortedMNIST, MNISTAddition, Volume3D
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
    register_distortion,
)
from torchstn.data.idx import read_idx, write_idx
from torchstn.data.mnist import fetch_mnist, load_mnist
from torchstn.data.synthetic import synthetic_digits
from torchstn.data.tensor_file import TensorFile

__all__ = [
    "load_mnist",
    "fetch_mnist",
    "read_idx",
    "write_idx",
    "DistortedMNIST",
    "MNISTAddition",
    "CoLocalisation",
    "Volume3D",
    "TensorFile",
    "TEST_SEED",
    "synthetic_digits",
    "DISTORTIONS",
    "VARIANTS",
    "Distortion",
    "Plain",
    "Rotate",
    "RotateTranslateScale",
    "ProjectiveJitter",
    "Elastic",
    "TranslateClutter",
    "Extrude3D",
    "get_distortion",
    "register_distortion",
]

#: Names that left this package with the reproduction wing, and where they are now.
MOVED = {"save_samples_figure": "torchstn.experiments.data_figure"}


def __getattr__(name: str):
    if name in MOVED:  # the library cannot import the wing: say where it went instead
        raise AttributeError(f"torchstn.data.{name} moved to {MOVED[name]}: import it from there")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
