"""Paper models, registered by name: ``build_model("st_cnn", in_shape=(1, 42, 42), transform="tps")``.

Registered: ``fcn``, ``cnn``, ``st_fcn``, ``st_cnn`` (the paper's distorted-MNIST Table 1, parameter counts matched
per input shape; see :mod:`torchstn.models.mnist`), ``st_fcn_2x`` / ``st_cnn_2x`` (two parallel STs, MNIST
addition), ``st3d_cnn`` / ``proj_cnn`` (the 3D experiment's volume models, :mod:`torchstn.models.volume`)
``tutorial_stn`` (the PyTorch tutorial's STN, a benchmark peer only) and ``ic_stn`` / ``ic_stn1`` / ``ic_stn2`` /
``ic_stn4`` (compositional transformers, the IC-STN experiment; :mod:`torchstn.models.compositional`).
"""

from torchstn.models import compositional  # noqa: F401  (registers the ic_stn models)
from torchstn.models.budget import fit_width, reference_budget
from torchstn.models.classifiers import cnn_classifier, fcn_classifier
from torchstn.models.mnist import TABLE1_MODELS, PaperNet, parameter_table
from torchstn.models.registry import (
    build_model,
    count_parameters,
    list_models,
    model_options,
    model_spatial_dims,
    register_model,
)
from torchstn.models.tutorial import TutorialSTN
from torchstn.models.volume import VolumeNet

__all__ = [
    "build_model",
    "list_models",
    "model_options",
    "model_spatial_dims",
    "register_model",
    "count_parameters",
    "parameter_table",
    "reference_budget",
    "fit_width",
    "fcn_classifier",
    "cnn_classifier",
    "PaperNet",
    "TutorialSTN",
    "VolumeNet",
    "TABLE1_MODELS",
]
