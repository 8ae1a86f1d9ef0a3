"""The task hook: what an experiment tells the engine, so that every experiment trains through the same loop.

The engine (:func:`~torchstn.experiments.engine.trainer.fit`, :func:`~torchstn.experiments.engine.steps.train_steps`)
owns the run: the optimiser and schedule, DDP, ``run.amp``, signals, RNG-exact resume, checkpoints, ``metrics.csv``,
the progress bar and TensorBoard. A :class:`Task` owns what differs between experiments:

* :meth:`Task.datasets`: the training and test sets (any object with ``len()`` and ``batch(indices, generator)``);
* :meth:`Task.build_model`: the network, from the config and the data's input shape and class count (and
  :meth:`Task.build_saved_model`, the same network for a saved run's weights);
* :meth:`Task.batch`: the inputs and targets of one step (default: the dataset's ``batch``), drawing any randomness
  from the engine's checkpointed generator;
* :meth:`Task.loss` and :meth:`Task.mistakes`: the training loss of a batch, and how many of its items are wrong
  (the ``error`` column of ``metrics.csv``);
* :meth:`Task.evaluate`: ``{"loss", "error", "n", ...}`` on a test set (``error`` in %, lower is better; extra keys
  go into ``result.json``);
* optional :meth:`Task.param_groups` (optimiser groups) and :meth:`Task.on_step` (a state change before each step,
  such as a curriculum: made through this hook, never inside a data callback).

A config names its task in ``[task]`` (``name``, default ``classify``: the paper's MNIST classification) with the
task's own options (its :attr:`Task.Options` dataclass, checked like every other section). A task registers itself
with ``@TASKS.register("name")``; the wing's experiments do so when ``torchstn.experiments`` is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from torchstn._registry import Registry
from torchstn.errors import ConfigError
from torchstn.experiments.engine.evaluation import evaluate_batches
from torchstn.experiments.engine.fields import coerce, fields_of, unknown_key

__all__ = ["Task", "TASKS", "TaskConfig", "NoOptions", "task_from_dict", "task_to_dict", "task_keys", "DEFAULT_TASK"]

DEFAULT_TASK = "classify"
TASKS: Registry[type[Task]] = Registry("task.name", error=ConfigError)


@dataclass(frozen=True)
class NoOptions:
    """The options of a task that has none."""


@dataclass(frozen=True)
class TaskConfig:
    """The ``[task]`` section: the task's registered name and its options (an instance of its ``Options``)."""

    name: str = DEFAULT_TASK
    options: Any = field(default_factory=NoOptions)


class Task:
    """How one experiment trains on the engine (see the module docstring). Subclass it and register the subclass.

    Args:
        cfg: the resolved :class:`~torchstn.experiments.engine.config.TrainConfig` of the run.
    """

    #: The dataclass of this task's ``[task]`` options (frozen; fields with defaults and annotations).
    Options: ClassVar[type] = NoOptions
    #: The ``data.variant`` values this task accepts (empty: any).
    variants: ClassVar[tuple[str, ...]] = ()
    #: Whether ``run.amp = "auto"`` may choose bfloat16 on a CPU that has it: set it only once a run with bfloat16
    #: reached the accuracy of float32 (``docs/training.md``, "CPU").
    auto_bf16: ClassVar[bool] = False

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.options = cfg.task.options

    def datasets(self, *, train: bool = True, test: bool = True) -> tuple[Any, Any]:
        """``(train_set, test_set)``, ``None`` for one not asked for."""
        raise NotImplementedError

    def build_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """The network for inputs of ``in_shape`` (without the batch dimension), its parameters materialised."""
        raise NotImplementedError

    def build_saved_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """The network a saved run's weights are loaded into (:func:`~torchstn.experiments.engine.runs.load_run`):
        :meth:`build_model` unless that reads starting weights from files, which the checkpoint makes unneeded."""
        return self.build_model(in_shape, num_classes)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """Optimiser parameter groups (each with its ``lr``), or ``None`` for the engine's default: every spatial
        transformer at ``optim.lr * optim.loc_lr_mult``, the rest at ``optim.lr``."""
        return None

    def batch(self, train_set: Any, indices: torch.Tensor, generator: torch.Generator) -> tuple[Any, Any]:
        """The ``(inputs, targets)`` of one training step (tensors, or tuples of tensors, moved to the device by the
        engine); randomness from ``generator`` only, so a resumed run draws the same."""
        return train_set.batch(indices, generator=generator)

    def forward(self, net: nn.Module, inputs: Any) -> Any:
        """The outputs of ``net`` (the model, DDP-wrapped under ``torchrun``) for ``inputs``."""
        return net(inputs)

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The scalar training loss of a batch (computed in float32)."""
        raise NotImplementedError

    def mistakes(self, outputs: Any, targets: Any) -> tuple[int, int]:
        """``(wrong, items)`` of a training batch: the training ``error`` column is ``100 * wrong / items``."""
        raise NotImplementedError

    def evaluate(
        self,
        model: nn.Module,
        dataset: Any,
        *,
        batch_size: int,
        device: torch.device,
        limit: int = 0,
        amp: str = "off",
        progress: Any = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, float] | None:
        """``{"loss", "error" (%), "n", ...}`` of ``model`` on the first ``limit`` items of ``dataset`` (0: all), or
        ``None`` when ``should_stop()`` abandoned it. The default runs the engine's evaluation loop
        (:func:`~torchstn.experiments.engine.evaluation.evaluate_batches`) with this task's :meth:`loss` and
        :meth:`mistakes`."""
        return evaluate_batches(
            model,
            dataset,
            self.score,
            batch_size=batch_size,
            device=device,
            limit=limit,
            amp=amp,
            progress=progress,
            should_stop=should_stop,
        )

    def score(self, outputs: Any, targets: Any) -> tuple[float, int, int]:
        """``(summed loss, wrong items, items)`` of an evaluation batch, from :meth:`loss` and :meth:`mistakes`."""
        wrong, items = self.mistakes(outputs, targets)
        return float(self.loss(outputs, targets)) * items, wrong, items

    def on_step(self, model: nn.Module, step: int) -> None:
        """Called before the forward pass of iteration ``step`` (0-based) and before every evaluation (with the
        step reached), on every rank: a curriculum changes the model here."""

    def describe(self, in_shape: tuple[int, ...]) -> str:
        """The data part of the line that opens a run."""
        return f"data {self.cfg.data.variant} {tuple(in_shape)}"


def task_from_dict(values: Mapping[str, Any]) -> tuple[TaskConfig, list[tuple[str, str]]]:
    """The ``[task]`` section from plain data, with ``(key, message)`` for each problem (bad keys keep defaults)."""
    problems: list[tuple[str, str]] = []
    name = values.get("name", DEFAULT_TASK)
    try:
        cls = TASKS.get(name)
        name = TASKS.canonical(name)
    except ConfigError as e:
        return TaskConfig(), [("task.name", str(e))]
    types_ = fields_of(cls.Options)
    kwargs = {}
    for key, value in values.items():
        if key == "name":
            continue
        if key not in types_:
            accepted = ["task.name", *(f"task.{k}" for k in types_)]
            problems.append((f"task.{key}", f"{unknown_key(f'task.{key}', accepted)} (for task {name!r})"))
            continue
        try:
            kwargs[key] = coerce(f"task.{key}", value, types_[key])
        except ConfigError as e:
            problems.append((f"task.{key}", str(e)))
    return TaskConfig(name, cls.Options(**kwargs)), problems


def task_to_dict(task: TaskConfig) -> dict[str, Any]:
    """``{"name": ..., option: value, ...}`` (tuples as lists); :func:`task_from_dict` inverts it."""
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(task.options).items()}
    return {"name": task.name, **options}


def task_keys(name: str) -> dict[str, Any]:
    """``{option: annotation}`` of the registered task ``name`` (for ``--set task.<option>=...``)."""
    return fields_of(TASKS.get(name).Options)
