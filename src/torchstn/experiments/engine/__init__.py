"""The one training engine: every experiment of the wing trains through it.

See ``docs/training.md`` and ``docs/architecture.md``. The pieces: :mod:`~torchstn.experiments.engine.config`
(frozen config dataclasses, checked once they are resolved), :mod:`~torchstn.experiments.engine.config_io` (TOML,
``--set`` overrides), :mod:`~torchstn.experiments.engine.schedules` (named presets, optimiser, lr schedule),
:mod:`~torchstn.experiments.engine.tasks` (the task hook an experiment implements; :mod:`~.classify` is the
default), :mod:`~torchstn.experiments.engine.trainer` (:func:`fit`: setup, session, result),
:mod:`~torchstn.experiments.engine.steps` (:func:`train_steps`, :func:`evaluate`),
:mod:`~torchstn.experiments.engine.session` (evaluations, checkpoints, stops), :mod:`~.checkpoint` (atomic,
``weights_only`` checkpoints), :mod:`~.distributed` (``torchrun``), :mod:`~.signals`, :mod:`~.metrics`, :mod:`~.runs`.
"""

import warnings

from torchstn.experiments.engine import classify  # noqa: F401  (registers the default task)
from torchstn.experiments.engine.checkpoint import load_checkpoint, save_checkpoint
from torchstn.experiments.engine.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    resolve,
    to_dict,
)
from torchstn.experiments.engine.config_io import apply_overrides, load_config, to_toml
from torchstn.experiments.engine.schedules import SCHEDULES
from torchstn.experiments.engine.steps import evaluate, model_from_config, parameter_counts, train_steps
from torchstn.experiments.engine.tasks import TASKS, Task, TaskConfig
from torchstn.experiments.engine.trainer import fit

__all__ = [
    "TrainConfig",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TaskConfig",
    "Task",
    "TASKS",
    "load_config",
    "from_dict",
    "to_dict",
    "to_toml",
    "apply_overrides",
    "SCHEDULES",
    "resolve",
    "fit",
    "evaluate",
    "train_steps",
    "model_from_config",
    "parameter_counts",
    "save_checkpoint",
    "load_checkpoint",
]

_RENAMED = {"build_model": "model_from_config", "count_parameters": "parameter_counts"}


def __getattr__(name: str):
    """Old names of this package's functions, with a deprecation message naming the new one."""
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(
            f"torchstn.experiments.engine.{name} is now {new} (torchstn.models.{name} is the model registry's)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
