"""The ``svhn`` task: how the training engine trains the SVHN models (paper §4.2, Table 2), and its schedules.

A config names it with ``[task] name = "svhn"`` and ``[data] variant = "svhn"``, ``root`` = the cache folder of
``torchstn svhn prepare``; its own options are :class:`SVHNOptions` (``--set task.<option>=...``). The loss is the sum
of the 5 heads' cross-entropies and ``error`` is the % sequence error: an image is wrong unless every head is right,
the null classes after its end included.

Schedules (:data:`SCHEDULES`, registered with the engine as ``svhn_paper`` and ``svhn_smoke``): ``paper`` is the
paper's [S]: SGD, batch 128, lr 0.01 x0.1 every 80k iterations, 400k iterations, weight decay 5e-4, localisation nets
at lr / 10 (dropout 0.5 is the models' default). The momentum is not given; we use 0.9 [?] (``--set optim.momentum=0``
for plain SGD). ``smoke`` is a few CPU-minutes check that the pipeline runs.

Example:
    >>> from torchstn.experiments.engine.config import from_dict, resolve
    >>> cfg = resolve(from_dict({"task": {"name": "svhn", "crop": 54}, "data": {"variant": "svhn"},
    ...                          "model": {"name": "svhn_cnn"}, "optim": {"schedule": "svhn_paper"}}))
    >>> cfg.optim.lr_steps, cfg.optim.loc_lr_mult, cfg.task.options.crop
    ((80000, 160000, 240000, 320000), 0.1, 54)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchstn._checks import look_up_option
from torchstn.errors import ConfigError, OptionError
from torchstn.experiments.engine.schedules import SCHEDULES as ENGINE_SCHEDULES
from torchstn.experiments.engine.schedules import sgd_step_preset
from torchstn.experiments.engine.tasks import TASKS, Task
from torchstn.experiments.svhn.data import SVHNSequences, load_svhn
from torchstn.experiments.svhn.models import SVHN_MODELS, sequence_correct, sequence_loss
from torchstn.models.registry import build_model

__all__ = ["SCHEDULES", "SVHNTask", "SVHNOptions", "EVAL_SPLITS"]

_PAPER = sgd_step_preset(
    lr=0.01,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=128,
    iterations=400_000,
    lr_steps=(80_000, 160_000, 240_000, 320_000),
    loc_lr_mult=0.1,
)
#: The SVHN schedules by their ``--schedule`` names; the engine knows them as ``svhn_<name>``.
SCHEDULES = {"paper": _PAPER, "smoke": dict(_PAPER, batch_size=16, iterations=20, lr_steps=(15,))}
for _name, _preset in SCHEDULES.items():
    ENGINE_SCHEDULES.register(f"svhn_{_name}", _preset)

EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class SVHNOptions:
    """The ``[task]`` options of ``svhn`` (``None``: the model's default).

    Attributes:
        size: which prepared crops to read: 64 (the paper's main set) or 128 (its looser set).
        crop: random ``crop x crop`` windows for training and the central one for evaluation (54: Goodfellow).
        eval_split: the held-out split the run evaluates on (``val`` or ``test``); ``result.json``'s ``test_error``
            is the % sequence error on it.
        held_out_limit: evaluate on its first N images only, the final evaluation too (0: all).
        fc, dropout, extra_conv, batch_norm, loc_channels, loc_fc, loc_hidden, st_layers, padding_mode: options of the
            SVHN models (:mod:`torchstn.experiments.svhn.models`); ``model.channels``, ``model.bound`` and
            ``model.transform`` are the other three.
    """

    size: int = 64
    crop: int | None = None
    eval_split: str = "val"
    held_out_limit: int = 0
    fc: tuple[int, ...] | None = None
    dropout: float | None = None
    extra_conv: bool = False
    batch_norm: bool = False
    loc_channels: tuple[int, ...] | None = None
    loc_fc: tuple[int, ...] | None = None
    loc_hidden: tuple[int, ...] | None = None
    st_layers: int | None = None
    padding_mode: str | None = None


_MODEL_OPTIONS = (
    "fc",
    "dropout",
    "extra_conv",
    "batch_norm",
    "loc_channels",
    "loc_fc",
    "loc_hidden",
    "st_layers",
    "padding_mode",
)


@TASKS.register("svhn")
class SVHNTask(Task):
    """House-number sequences: 5 heads of 11 classes, the summed cross-entropy as loss, and the sequence error (an
    image is wrong unless every head is right, the null classes after its end included) as ``error``.

    Raises:
        ConfigError: a model that is not an SVHN model, or a ``[data]`` / ``[task]`` value the task cannot use.
    """

    Options = SVHNOptions
    variants = ("svhn",)

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        look_up_option("model.name", cfg.model.name, SVHN_MODELS, error=ConfigError)
        o, d, m = self.options, cfg.data, cfg.model
        look_up_option("task.eval_split", o.eval_split, EVAL_SPLITS, error=ConfigError)
        unused = [
            k
            for k, v in (
                ("data.synthetic", d.synthetic),
                ("data.train_file", d.train_file),
                ("data.test_file", d.test_file),
                ("model.st_pool", m.st_pool),
                ("model.hidden", m.hidden),
            )
            if v
        ]
        if unused:
            raise ConfigError(
                f"the svhn task does not use {', '.join(unused)}: the data is the cache in data.root, "
                "the models' options are task.* (see torchstn.experiments.svhn.SVHNOptions)"
            )
        if o.size < 8 or (o.crop is not None and not 0 < o.crop <= o.size) or o.held_out_limit < 0:
            raise ConfigError(
                f"task.size must be >= 8, task.crop in 1..task.size and task.held_out_limit >= 0, got "
                f"{o.size}, {o.crop} and {o.held_out_limit}"
            )

    def datasets(self, *, train: bool = True, test: bool = True) -> tuple[Any, Any]:
        o = self.options
        train_set = SVHNSequences(load_svhn(self._root(), "train", o.size), crop=o.crop, train=True) if train else None
        return train_set, (self.held_out(o.eval_split, limit=o.held_out_limit) if test else None)

    def held_out(self, split: str, root: str | None = None, limit: int = 0) -> SVHNSequences:
        """A cached split (its first ``limit`` images, 0: all) with the run's size and central crops, from ``root``
        (default ``data.root``)."""
        data = load_svhn(root or self._root(), split, self.options.size)
        if limit:
            data = type(data)(
                data.images[:limit], data.labels[:limit], data.lengths[:limit], data.mean, data.std, data.names[:limit]
            )
        return SVHNSequences(data, crop=self.options.crop, train=False)

    def _root(self) -> str:
        if not self.cfg.data.root:
            raise ConfigError("data.root must name the cache folder of `torchstn svhn prepare` (svhn train --data)")
        return self.cfg.data.root

    def build_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        m, o = self.cfg.model, self.options
        options = {k: getattr(o, k) for k in _MODEL_OPTIONS if getattr(o, k) is not None}
        options.update({k: v for k, v in (("channels", m.channels), ("bound", m.bound)) if v is not None})
        try:
            return build_model(
                m.name, in_shape=tuple(in_shape), num_classes=num_classes, transform=m.transform, **options
            )
        except (OptionError, TypeError, ValueError) as e:
            raise ConfigError(f"[model] name={m.name!r} with options {options}: {e}") from e

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sequence_loss(outputs.float(), targets)

    def mistakes(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        return int((~sequence_correct(outputs.detach(), targets)).sum()), len(targets)

    def describe(self, in_shape: tuple[int, ...]) -> str:
        o = self.options
        return f"data SVHN {o.size}px {tuple(in_shape)} from {self.cfg.data.root}, evaluated on {o.eval_split}"
