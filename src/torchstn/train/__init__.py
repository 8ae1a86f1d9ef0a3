"""Training, evaluation and reproduction of the paper's experiments (the logic behind the ``torchstn`` CLI).

See ``docs/training.md``. The pieces: :mod:`~torchstn.train.config` (frozen config dataclasses, TOML, ``--set``
overrides), :mod:`~torchstn.train.schedules` (``paper`` / ``cpu`` / ``demo``), :mod:`~torchstn.train.trainer`
(:func:`fit`, :func:`evaluate`), :mod:`~torchstn.train.checkpoint` (atomic, ``weights_only`` checkpoints),
:mod:`~torchstn.train.reproduce` (Table 1) and :mod:`~torchstn.train.demo`.
"""

from torchstn.train.checkpoint import load_checkpoint, save_checkpoint
from torchstn.train.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from torchstn.train.config_io import apply_overrides, load_config, to_toml
from torchstn.train.schedules import SCHEDULES, resolve
from torchstn.train.trainer import build_model, count_parameters, evaluate, fit, train_steps

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
