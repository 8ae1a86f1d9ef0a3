"""The training configuration's sections: small frozen dataclasses, one per TOML table.

A config has four sections, ``[model]`` (:class:`ModelConfig`), ``[data]`` (:class:`DataConfig`), ``[optim]``
(:class:`OptimConfig`) and ``[run]`` (:class:`RunConfig`), and a ``[task]``; :class:`TrainConfig` holds them.
:mod:`torchstn.experiments.engine.config` builds and checks them (and re-exports every name here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torchstn.experiments.engine.fields import fields_of
from torchstn.experiments.engine.tasks import TaskConfig

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "VARIANTS",
    "DEVICES",
    "AMP_MODES",
    "MEMORY_FORMATS",
    "SECTIONS",
    "all_keys",
]

VARIANTS = ("R", "RTS", "P", "E", "TC", "plain", "addition", "3D")
DEVICES = ("cpu", "cuda")
AMP_MODES = ("auto", "off", "bf16", "fp16")
MEMORY_FORMATS = ("contiguous", "channels_last")


@dataclass(frozen=True)
class ModelConfig:
    """The network (see :func:`torchstn.models.build_model`).

    Attributes:
        name: registered model name (``fcn``, ``cnn``, ``st_fcn``, ``st_cnn``, ``st_fcn_2x``, ``tutorial_stn``).
        transform: transform family of the spatial transformer(s) (``affine``, ``projective``, ``tps``, ...);
            ``None`` for the model's default (plain nets have none).
        st_pool: average-pool the transformer's output x2 before the classifier (paper: RTS and TC).
        bound: keep every transform parameter within ``bound`` of the identity (tanh); ``None`` for unbounded.
        channels: the CNN's two conv widths; ``None`` fits them to the experiment's parameter budget.
        hidden: the FCN's two hidden widths; ``None`` fits them to the budget.
    """

    name: str = "st_cnn"
    transform: str | None = None
    st_pool: bool = False
    bound: float | None = None
    channels: tuple[int, ...] | None = None
    hidden: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DataConfig:
    """The data: a distorted-MNIST variant, an appendix experiment's data, or tensor files of your own.

    Attributes:
        variant: ``R``, ``RTS``, ``P``, ``E``, ``TC`` or ``plain`` (paper §4.1); ``addition`` (two RTS digits, one
            per channel, labelled with their sum, 19 classes; Appendix A.1) or ``3D`` (a digit extruded into a
            ``60^3`` volume, Appendix A.3).
        root: directory with the MNIST IDX files; ``None`` uses ``$TORCHSTN_DATA`` / the cache / the registry.
        synthetic: use this many synthetic seven-segment digits (and a sixth as many for testing) instead of MNIST:
            offline smoke runs and tests, not MNIST results (0 = MNIST).
        train_file: train on this tensor file (:class:`torchstn.data.TensorFile`) instead of ``variant``.
        test_file: evaluate on this tensor file instead of the variant's fixed test set.
        recipe: the variant's recipe, for a variant that has several (``P``: ``radial``, ``ours``, ``stretch``,
            ``padded``, ``legible``; ``E``: ``plain``, ``zoom``; see ``docs/datasets.md``); ``None`` for its
            default. Reaches the training and test sets.
        sigma: the spread in px of the variant's random moves, for a variant that has one (``P``: the corner moves,
            ``E``: the control-point moves; ``ICSTN``: the corner moves, in normalised units); ``None`` for the
            recipe's own default. Reaches both sets, like ``recipe``.
    """

    variant: str = "RTS"
    root: str | None = None
    synthetic: int = 0
    train_file: str | None = None
    test_file: str | None = None
    recipe: str | None = None
    sigma: float | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule. ``None`` fields come from the named ``schedule``.

    Attributes:
        schedule: ``paper``, ``cpu``, ``cpu_long`` or ``demo`` (see :mod:`torchstn.experiments.engine.schedules`).
        optimizer: ``sgd`` or ``adam``.
        lr: base learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 weight decay.
        batch_size: images per iteration.
        iterations: optimiser steps.
        decay: ``step`` (x ``gamma`` at each of ``lr_steps``), ``cosine``, ``onecycle`` or ``constant``.
        lr_steps: iterations at which ``step`` decay multiplies the lr by ``gamma``.
        gamma: the ``step`` decay factor.
        warmup: iterations of linear warm-up from ``lr / 10`` (added before any decay).
        loc_lr_mult: learning-rate multiplier of every localisation net and regression head.
        identity_weight: weight of the identity regulariser (0 = off).
        grad_clip: clip the gradient norm to this value; 0 = off.
        clock: ``steps`` (the schedule runs over ``iterations``) or ``time`` (it runs over ``run.time_limit``
            minutes of wall time, ``iterations`` only setting its scale: warm-up and step positions are read as
            fractions of it; training ends when the time is up). ``time`` adapts to a busy machine but is not
            reproducible iteration for iteration.
        ema: decay of an exponential moving average of the weights (and buffers), updated after every optimiser
            step; ``0`` (the default, and every schedule's) keeps none. When set, the average is the run's model:
            evaluated, saved and loaded (:func:`~torchstn.experiments.engine.runs.load_run`), with the raw
            weights' final error beside it (``test_error_raw``). It does not change the training itself. Not
            taken from the schedule: a config without the key (every run before it existed) keeps no average.
    """

    schedule: str = "cpu"
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    iterations: int | None = None
    decay: str | None = None
    lr_steps: tuple[int, ...] | None = None
    gamma: float | None = None
    warmup: int | None = None
    loc_lr_mult: float | None = None
    identity_weight: float | None = None
    grad_clip: float | None = None
    clock: str | None = None
    ema: float = 0.0


@dataclass(frozen=True)
class RunConfig:
    """How to run: seed, device, logging and checkpoint cadence, time budget.

    Attributes:
        seed: seeds the model initialisation, the batch order and the training distortions.
        device: ``cpu`` or ``cuda`` (``cuda:N`` for one GPU).
        threads: CPU threads for torch (``torch.set_num_threads``); ``None`` keeps torch's default.
        deterministic: ask torch for deterministic algorithms (needed for bitwise resume on GPU).
        eval_every: evaluate on the test set every this many iterations (0 = only at the end).
        eval_limit: periodic evaluations use the first ``eval_limit`` test images (0 = all); the final one uses all.
        eval_batch_size: batch size of evaluation.
        log_every: log training loss, error, throughput and theta statistics every this many iterations.
        checkpoint_every: save ``last.pt`` every this many iterations (0 = only at evaluations and the end).
        time_limit: stop training after this many minutes (the run is still checkpointed and evaluated).
        out: output directory; ``None`` gives ``runs/<config name>``.
        amp: mixed precision of the forward pass and the loss: ``off``, ``bf16`` (CPU or a GPU that supports it),
            ``fp16`` (CUDA only, with a gradient scaler) or ``auto``: ``bf16`` on a CPU that computes bfloat16 in
            hardware (AVX512-BF16 or AMX) for the tasks whose accuracy was checked with it, else ``off``. A run
            saves the mode ``auto`` chose, and a resume keeps it; see :mod:`torchstn.experiments.engine.trainer`.
        memory_format: layout of the 2-D convolution weights, ``contiguous`` or ``channels_last``. It changes the
            speed, not the function (on this project's CPU channels-last did not pay for the paper's networks:
            ``docs/training.md``, "Training fast on a CPU").
        dist_timeout: under ``torchrun``, minutes a process waits at a collective (for a peer that hangs or died)
            before the job fails; see :mod:`torchstn.experiments.engine.distributed`.
    """

    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    deterministic: bool = False
    eval_every: int = 0
    eval_limit: int = 0
    eval_batch_size: int = 500
    log_every: int = 50
    checkpoint_every: int = 1000
    time_limit: float | None = None
    out: str | None = None
    amp: str = "auto"
    memory_format: str = "contiguous"
    dist_timeout: float = 30.0


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: ``model``, ``data``, ``optim`` and ``run`` sections, and the ``task`` that says how the
    engine trains it (:mod:`torchstn.experiments.engine.tasks`; default ``classify``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    task: TaskConfig = field(default_factory=TaskConfig)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


def all_keys() -> list[str]:
    """Every ``section.key`` of the fixed sections (the task's options depend on the task: :func:`task_keys`)."""
    return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in fields_of(cls)] + ["task.name"]
