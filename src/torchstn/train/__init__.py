"""Deprecated spelling of :mod:`torchstn.experiments.engine`; importing it warns.

``from torchstn.train import fit`` and ``from torchstn.train.trainer import fit`` keep working for now: every public
name of the engine is re-exported here, and the old submodules (``config``, ``config_io``, ``trainer``, ``loop``,
``checkpoint``, ``reproduce``, ``demo``, ...) are the engine's (or the wing's) modules under their old names.
"""

import importlib
import sys
import warnings

from torchstn.experiments import engine
from torchstn.experiments.engine import *  # noqa: F403
from torchstn.experiments.engine import __all__  # noqa: F401

warnings.warn(
    "torchstn.train moved to torchstn.experiments.engine; import it from there (torchstn.train will be "
    "removed in a later release)",
    DeprecationWarning,
    stacklevel=2,
)

#: Old submodule -> where it lives now.
MOVED = {
    **{
        name: f"torchstn.experiments.engine.{name}"
        for name in (
            "checkpoint",
            "config",
            "config_io",
            "data",
            "distributed",
            "metrics",
            "runs",
            "schedules",
            "session",
            "signals",
            "trainer",
        )
    },
    "loop": "torchstn.experiments.engine.steps",
    "reproduce": "torchstn.experiments.reproduce",
    "demo": "torchstn.experiments.demo",
}
for _old, _new in MOVED.items():
    sys.modules.setdefault(f"{__name__}.{_old}", importlib.import_module(_new))


def __getattr__(name: str):
    if name in MOVED:
        return sys.modules[f"{__name__}.{name}"]
    return getattr(engine, name)
