"""The CUB-200-2011 task (paper §4.3, Table 3) on the training engine: ``[task] name = "cub"``.

A config of this task names the network in ``[model]`` (``name = "cub_st_cnn"`` or ``"cub_cnn"``; the other model
fields do not apply), the ``CUB_200_2011`` folder in ``[data]`` (``variant = "cub"``, ``root = ...``), its own options
in ``[task]`` (:class:`CUBOptions`) and a schedule in ``[optim]``: the engine presets ``cub_paper`` and ``cub_smoke``
(:data:`CUB_PAPER`, :data:`CUB_SMOKE`). The engine does the rest (``fit``: DDP, ``run.amp``, exact resume, ...).

Training batches: the engine's batch order, each image's random crop and flip drawn from the engine's checkpointed
generator (:meth:`~torchstn.experiments.cub.data.CUBDataset.batch`); evaluation: the central crop, top-1 accuracy
(``accuracy`` beside the engine's ``error`` %). Optimiser groups:
:func:`~torchstn.experiments.cub.models.cub_param_groups` (the shared localisation backbone learns at the localisation
rate too).

Example:
    >>> from torchstn.experiments.engine.config import from_dict, resolve
    >>> cfg = resolve(from_dict({"model": {"name": "cub_st_cnn"}, "data": {"variant": "cub", "root": "CUB_200_2011"},
    ...                          "optim": {"schedule": "cub_paper"}, "task": {"name": "cub", "num_parts": 4}}))
    >>> cfg.task.options.num_parts, cfg.optim.lr, cfg.optim.lr_steps, cfg.optim.loc_lr_mult
    (4, 0.1, (10000, 20000, 25000), 0.0001)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from torchstn.errors import ConfigError, OptionError
from torchstn.experiments.cub.data import CUBDataset, CUBIndex, read_cub
from torchstn.experiments.cub.models import CUB_MODELS, cub_param_groups
from torchstn.experiments.engine.classify import ClassifyTask
from torchstn.experiments.engine.config import problems_error
from torchstn.experiments.engine.schedules import SCHEDULES, sgd_step_preset
from torchstn.experiments.engine.tasks import TASKS
from torchstn.models.registry import build_model

__all__ = ["CUBTask", "CUBOptions", "CUB_PAPER", "CUB_SMOKE"]

#: The paper's schedule [S]: SGD, lr 0.1 x0.1 at 10k / 20k / 25k iterations, localisation lr x1e-4, weight decay 1e-5;
#: 30k iterations, batch 32 and momentum 0.9 are our choices [?] (``docs/real_images.md``).
CUB_PAPER = sgd_step_preset(
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-5,
    batch_size=32,
    iterations=30_000,
    lr_steps=(10_000, 20_000, 25_000),
    loc_lr_mult=1e-4,
)
#: Ten small steps on the CPU: does the pipeline run (no result).
CUB_SMOKE = dict(CUB_PAPER, lr=0.01, batch_size=4, iterations=10, lr_steps=(8,), loc_lr_mult=1e-2)
SCHEDULES.register("cub_paper", CUB_PAPER)
SCHEDULES.register("cub_smoke", CUB_SMOKE)

_PARTS_OPTIONS = ("num_parts", "part_size", "scale", "share_parts", "loc_backbone", "loc_weights")


@dataclass(frozen=True)
class CUBOptions:
    """The ``[task]`` options of ``cub``.

    Attributes:
        size: input side: 448 for the paper's ST models, 224 for its CNN (images are resized to ``size * 8 / 7``,
            then cropped).
        exclude: images to leave out (the ImageNet overlap): an exclusion-list file or image ids
            (:func:`~torchstn.experiments.cub.data.read_cub`).
        workers: threads that decode a batch's images (0: the training thread); results do not depend on it.
        backbone: ``tiny`` (tests), ``torchvision:<arch>``, ``timm:<name>`` or a registered backbone.
        weights: state dict of the pretrained backbone (nothing is downloaded).
        allow_random_init: train a pretrained backbone from random initialisation (warns; far from the paper).
        dropout: before the classifier (the paper's 0.7).
        num_parts: parallel transformers of ``cub_st_cnn`` (2 or 4 in the paper).
        part_size: side of each transformer's output.
        scale: the windows' fixed half-size (0.5: half the image).
        loc_size: the localisation net sees the input resized to this (0: the input as it is).
        share_parts: one part network for every window.
        loc_backbone: the localisation backbone (default: ``backbone``); ``loc_weights``: its weights.
    """

    size: int = 448
    exclude: str | tuple[int, ...] | None = None
    workers: int = 4
    backbone: str = "tiny"
    weights: str | None = None
    allow_random_init: bool = False
    dropout: float = 0.7
    num_parts: int = 2
    part_size: int = 224
    scale: float = 0.5
    loc_size: int = 224
    share_parts: bool = False
    loc_backbone: str | None = None
    loc_weights: str | None = None


def _problems(cfg: Any) -> list[str]:
    """What in ``cfg`` does not fit the ``cub`` task: another model, model or data fields it does not use, options
    out of range."""
    m, d, o = cfg.model, cfg.data, cfg.task.options
    problems = []
    if m.name not in CUB_MODELS:
        problems.append(f"model.name must be one of {list(CUB_MODELS)} for task 'cub', got {m.name!r}")
    unused = [f"model.{k}" for k in ("transform", "bound", "channels", "hidden") if getattr(m, k) is not None]
    unused += [f"data.{k}" for k in ("synthetic", "train_file", "test_file") if getattr(d, k)]
    unused += ["model.st_pool"] if m.st_pool else []
    if unused:
        problems.append(f"{', '.join(unused)}: not used by task 'cub' (its model options are in [task])")
    ranges = [
        ("size", o.size >= 1, ">= 1"),
        ("workers", o.workers >= 0, ">= 0"),
        ("num_parts", o.num_parts >= 1, ">= 1"),
        ("part_size", o.part_size >= 1, ">= 1"),
        ("scale", 0 < o.scale <= 1, "in (0, 1]"),
        ("loc_size", o.loc_size >= 0, ">= 0"),
        ("dropout", 0 <= o.dropout < 1, "in [0, 1)"),
    ]
    problems += [f"task.{k} must be {rule}, got {getattr(o, k)!r}" for k, ok, rule in ranges if not ok]
    return problems


@TASKS.register("cub")
class CUBTask(ClassifyTask):
    """CUB-200-2011 classification (see the module docstring).

    Raises:
        ConfigError: the config does not fit the task (every problem, one line each).
    """

    Options = CUBOptions
    variants = ("cub",)
    auto_bf16 = False  # not yet trained in bfloat16: run.amp = "auto" stays float32

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        problems = _problems(cfg)
        if problems:
            raise problems_error(problems)

    def index(self) -> CUBIndex:
        """The parsed ``data.root`` folder, less ``task.exclude``.

        Raises:
            ConfigError: no ``data.root``.
            DataError: a bad folder or exclusion list (named).
        """
        if self.cfg.data.root is None:
            raise ConfigError("data.root must name the CUB_200_2011 folder (task 'cub')")
        exclude = self.options.exclude
        return read_cub(self.cfg.data.root, list(exclude) if isinstance(exclude, tuple) else exclude)

    def dataset(
        self, split: str, *, index: CUBIndex | None = None, augment: bool | None = None, return_box: bool = False
    ) -> CUBDataset:
        """The images of ``split`` (``train``, ``test``, ``all``) at ``task.size``; ``augment`` defaults to
        ``split == "train"``."""
        o = self.options
        return CUBDataset(
            index or self.index(), split, size=o.size, augment=augment, return_box=return_box, workers=o.workers
        )

    def datasets(self, *, train: bool = True, test: bool = True) -> tuple[Any, Any]:
        index = self.index()
        return (
            self.dataset("train", index=index) if train else None,
            self.dataset("test", index=index) if test else None,
        )

    def model_options(self) -> dict[str, Any]:
        """The builder options of ``model.name`` from the task's options."""
        o = self.options
        options = {
            "backbone": o.backbone,
            "weights": o.weights,
            "allow_random_init": o.allow_random_init,
            "dropout": o.dropout,
        }
        if self.cfg.model.name == "cub_st_cnn":
            options.update({k: getattr(o, k) for k in _PARTS_OPTIONS}, loc_size=o.loc_size or None)
        return options

    def build_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return self._build(in_shape, num_classes, self.model_options())

    def build_saved_model(self, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """The network without its pretrained weights (the checkpoint has every weight; the files may be gone)."""
        options = {**self.model_options(), "weights": None, "allow_random_init": True}
        if "loc_weights" in options:
            options["loc_weights"] = None
        with warnings.catch_warnings():  # "random initialisation": about to be overwritten by the checkpoint
            warnings.simplefilter("ignore")
            return self._build(in_shape, num_classes, options)

    def _build(self, in_shape: tuple[int, ...], num_classes: int, options: dict[str, Any]) -> nn.Module:
        try:
            return build_model(self.cfg.model.name, in_shape=tuple(in_shape), num_classes=num_classes, **options)
        except OptionError as e:
            raise ConfigError(f"[task] of model {self.cfg.model.name!r}: {e}") from e

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        o = self.cfg.optim
        return cub_param_groups(model, o.lr, o.loc_lr_mult, weight_decay=o.weight_decay)

    def evaluate(self, model: nn.Module, dataset: Any, **options: Any) -> dict[str, float] | None:
        """The engine's loss and % error, and the top-1 ``accuracy`` (a fraction, as Table 3 gives it in %)."""
        res = super().evaluate(model, dataset, **options)
        if res is not None:
            n = res["n"]
            res["accuracy"] = (n - round(res["error"] * n / 100)) / max(n, 1)
        return res

    def describe(self, in_shape: tuple[int, ...]) -> str:
        return f"data CUB-200-2011 {self.cfg.data.root} {tuple(in_shape)}"
