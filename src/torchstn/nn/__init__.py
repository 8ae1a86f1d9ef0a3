"""Modules: the SpatialTransformer, localisation-net builders, training helpers, a fast few-channel conv and
the hardware's fast paths (native bfloat16, channels-last), and the TPS text rectifier (RARE/TRBA) with its
checkpoint importer."""

from torchstn.nn.compositional import CompositionalSpatialTransformer, composable_families
from torchstn.nn.conv import FewChannelConv2d, few_channel_conv2d
from torchstn.nn.hardware import hold_freed_memory, native_bf16, to_channels_last
from torchstn.nn.head import ThetaHead
from torchstn.nn.importers import load_trba_tps, trba_tps_key_map
from torchstn.nn.localisation import LocalisationNet, conv_localisation, fc_localisation
from torchstn.nn.rectifier import TPSRectifier, rare_initial_points, text_localisation
from torchstn.nn.spatial_transformer import ParallelSpatialTransformers, SpatialTransformer
from torchstn.nn.training import identity_penalty, param_groups, record_theta, theta_stats

__all__ = [
    "SpatialTransformer",
    "ParallelSpatialTransformers",
    "CompositionalSpatialTransformer",
    "composable_families",
    "ThetaHead",
    "fc_localisation",
    "conv_localisation",
    "LocalisationNet",
    "param_groups",
    "record_theta",
    "identity_penalty",
    "theta_stats",
    "FewChannelConv2d",
    "few_channel_conv2d",
    "native_bf16",
    "to_channels_last",
    "hold_freed_memory",
    "TPSRectifier",
    "rare_initial_points",
    "text_localisation",
    "load_trba_tps",
    "trba_tps_key_map",
]
