"""The default task, ``classify``: the paper's MNIST classification experiments (Table 1, TC, addition, 3D, the
demo and your own tensor files), cross-entropy on logits, % error.

Experiments whose data and models differ but which still classify (one label per image) subclass
:class:`ClassifyTask` and override :meth:`~ClassifyTask.datasets` / :meth:`~ClassifyTask.build_model`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.experiments.engine.data import build_datasets
from torchstn.experiments.engine.evaluation import classification_score
from torchstn.experiments.engine.steps import model_from_config
from torchstn.experiments.engine.tasks import TASKS, Task

__all__ = ["ClassifyTask"]


@TASKS.register("classify")
class ClassifyTask(Task):
    """One label per image: ``data`` names the dataset (:func:`~torchstn.experiments.engine.data.build_datasets`),
    ``model`` the network (:func:`~torchstn.experiments.engine.steps.model_from_config`)."""

    auto_bf16 = True  # Table 1's RTS ST-CNN: the same test error in bfloat16 as in float32 (docs/training.md)

    def datasets(self, *, train: bool = True, test: bool = True) -> tuple[Any, Any]:
        return build_datasets(self.cfg, train=train, test=test)

    def build_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return model_from_config(self.cfg, in_shape, num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def mistakes(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        return int((outputs.detach().argmax(1) != targets).sum()), targets.numel()

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, int, int]:
        return classification_score(outputs, targets)  # summed in float32: the numbers of every earlier run
