"""The engine config of a CUB run (:func:`train_config`) and training it (:func:`train`): what
``torchstn cub train`` does, as functions."""

from __future__ import annotations

import ast
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torchstn.experiments.cub.data import read_cub
from torchstn.experiments.engine.config import TrainConfig, from_dict
from torchstn.experiments.engine.config_io import apply_overrides
from torchstn.experiments.engine.schedules import SCHEDULES as PRESETS
from torchstn.experiments.engine.trainer import fit

__all__ = ["SCHEDULES", "train_config", "train"]

#: The ``--schedule`` names of ``torchstn cub train`` and the engine presets they stand for.
SCHEDULES = {"paper": "cub_paper", "smoke": "cub_smoke"}


def train_config(
    root: str | os.PathLike[str],
    *,
    model: str = "cub_st_cnn",
    size: int = 448,
    schedule: str = "paper",
    overrides: Sequence[str] = (),
    model_options: Mapping[str, Any] | None = None,
    exclude: str | os.PathLike[str] | Sequence[int] | None = None,
    seed: int = 0,
    workers: int = 4,
    eval_every: int = 0,
    device: str = "cpu",
) -> TrainConfig:
    """The engine config of a CUB run, as :func:`train` and ``torchstn cub train`` make it.

    Args:
        root: the ``CUB_200_2011`` folder (``data.root``).
        schedule: ``paper``, ``smoke`` or any engine preset (``optim.schedule``).
        overrides: ``--set`` strings (``optim.lr=0.01``; the old ``lr_steps=(8, 16)`` still works, with a warning).
        model_options: ``[task]`` options (:class:`~torchstn.experiments.cub.task.CUBOptions`: ``num_parts``,
            ``backbone``, ``weights``, ...); ``None`` values keep the defaults (``loc_size=None``: the full input).
        exclude: an exclusion list or image ids, read now: the run saves the ids, so ``eval`` needs no file.

    Raises:
        ConfigError: an unknown schedule, option or key, or a bad value (every problem).
        DataError: a bad CUB folder or exclusion list.

    Example:
        >>> from torchstn.experiments.engine.config import resolve
        >>> cfg = resolve(train_config("CUB_200_2011", model_options={"num_parts": 4}, overrides=["iterations=300"]))
        >>> cfg.optim.schedule, cfg.optim.lr_steps, cfg.task.options.num_parts, cfg.run.eval_batch_size
        ('cub_paper', (100, 200, 250), 4, 32)
    """
    options = dict(model_options or {})
    if "loc_size" in options and options["loc_size"] is None:
        options["loc_size"] = 0
    task = {"name": "cub", "size": size, "workers": workers, **{k: v for k, v in options.items() if v is not None}}
    if exclude is not None:
        task["exclude"] = list(read_cub(root, exclude).excluded)
    preset = SCHEDULES.get(schedule, schedule)
    run = {
        "seed": seed,
        "device": device,
        "eval_every": eval_every,
        "eval_batch_size": PRESETS.get(preset)["batch_size"] if preset in PRESETS else 32,
    }
    cfg = from_dict(
        {
            "model": {"name": model},
            "data": {"variant": "cub", "root": str(root)},
            "optim": {"schedule": preset},
            "run": run,
            "task": task,
        }
    )
    return apply_overrides(cfg, [_engine_spelling(item) for item in overrides])


def _engine_spelling(item: str) -> str:
    """An old ``lr_steps`` override in Python's spelling (``lr_steps=(8, 16)``, ``lr_steps=8``) in the engine's
    (``optim.lr_steps=[8, 16]``), with a DeprecationWarning; any other override as it is."""
    key, sep, text = item.partition("=")
    if not sep or key.strip() not in ("lr_steps", "optim.lr_steps"):
        return item
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return item
    value = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(value, tuple):
        return item
    new = f"optim.lr_steps={list(value)}"
    warnings.warn(f"--set {item}: write {new} (a TOML list)", DeprecationWarning, stacklevel=3)
    return new


def train(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Any = print,
    command: str | None = None,
    **flags: Any,
) -> dict:
    """Train a CUB model with :func:`~torchstn.experiments.engine.trainer.fit`; returns the result (also
    ``out_dir/result.json``: ``test_accuracy``, ``test_error`` %, ``test_loss``, ...).

    Args:
        flags: the keywords of :func:`train_config` (``model``, ``size``, ``schedule``, ``overrides``,
            ``model_options``, ``exclude``, ``seed``, ``workers``, ``eval_every``, ``device``).
        resume: continue the run in ``out_dir`` exactly (a fresh run if it holds no checkpoint).
        overwrite: replace the run ``out_dir`` holds.
        log: ``None`` for no progress output.

    Raises:
        ConfigError: unknown model / schedule / option / key, a pretrained backbone without weights, or an
            ``out_dir`` that already holds a run (without ``resume`` or ``overwrite``).
        DataError: a bad CUB folder (the missing file is named).
        TrainingInterrupted: SIGINT / SIGTERM stopped it at an iteration boundary, checkpointed.
    """
    return fit(
        train_config(root, **flags),
        Path(out_dir),
        resume="auto" if resume else False,
        overwrite=overwrite,
        progress=log is not None,
        command=command,
    )
