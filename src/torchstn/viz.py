"""Deprecated spelling of :mod:`torchstn.experiments.viz` (the pictures are part of the reproduction wing now);
importing it warns and gives the same module."""

import sys
import warnings

from torchstn.experiments import viz

warnings.warn(
    "torchstn.viz moved to torchstn.experiments.viz; import it from there (torchstn.viz will be removed in a later "
    "release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = viz
