"""Training, evaluation and reproduction of the paper's experiments (the logic behind the ``torchstn`` CLI).

See ``docs/training.md``. The pieces: :mod:`~torchstn.experiments.engine.config` (frozen config dataclasses, TOML, ``--set``
overrides), :mod:`~torchstn.experiments.engine.schedules` (``paper`` / ``cpu`` / ``demo``), :mod:`~torchstn.experiments.engine.trainer`
(:func:`fit`, :func:`evaluate`), :mod:`~torchstn.experiments.engine.checkpoint` (atomic, ``weights_only`` checkpoints),
:mod:`~torchstn.experiments.reproduce` (Table 1) and :mod:`~torchstn.experiments.demo`.
"""

from torchstn.experiments.engine.checkpoint import load_checkpoint, save_checkpoint
from torchstn.experiments.engine.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from torchstn.experiments.engine.config_io import apply_overrides, load_config, to_toml
from torchstn.experiments.engine.schedules import SCHEDULES, resolve
from torchstn.experiments.engine.trainer import build_model, count_parameters, evaluate, fit, train_steps

__all__ = [
    "TrainConfig",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
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
    "build_model",
    "count_parameters",
    "save_checkpoint",
    "load_checkpoint",
]
