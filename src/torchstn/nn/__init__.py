"""Modules: the SpatialTransformer, localisation-net builders and training helpers."""

from torchstn.nn.head import ThetaHead
from torchstn.nn.localisation import LocalisationNet, conv_localisation, fc_localisation
from torchstn.nn.spatial_transformer import ParallelSpatialTransformers, SpatialTransformer
from torchstn.nn.training import identity_penalty, param_groups, record_theta, theta_stats

__all__ = [
    "SpatialTransformer",
    "ParallelSpatialTransformers",
    "ThetaHead",
    "fc_localisation",
    "conv_localisation",
    "LocalisationNet",
    "param_groups",
    "record_theta",
    "identity_penalty",
    "theta_stats",
]
