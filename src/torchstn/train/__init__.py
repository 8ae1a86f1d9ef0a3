"""Deprecated spelling of :mod:`torchstn.experiments.engine`; importing it warns.

``from torchstn.train import fit`` keeps working for now: every public name of the engine is re-exported here.
"""

import warnings

from torchstn.experiments.engine import *  # noqa: F403
from torchstn.experiments.engine import __all__  # noqa: F401

warnings.warn(
    "torchstn.train moved to torchstn.experiments.engine; import it from there (torchstn.train will be "
    "removed in a later release)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    from torchstn.experiments import engine

    return getattr(engine, name)
