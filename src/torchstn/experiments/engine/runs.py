"""Run directories: what marks one (:func:`run_files`), clearing one for a new run (:func:`clear_run`), and using a
finished run: load a checkpoint's model and config, and pick the data to evaluate or show it on.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> run_files(d)
    []
    >>> (d / "metrics.csv").write_text("step") and run_files(d)
    ['metrics.csv']
    >>> clear_run(d); run_files(d)
    []
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchstn.errors import DataError
from torchstn.experiments.engine.checkpoint import load_checkpoint
from torchstn.experiments.engine.config import TrainConfig, from_dict
from torchstn.experiments.engine.tasks import TASKS

__all__ = ["checkpoint_path", "load_run", "eval_dataset", "run_files", "clear_run", "RUN_FILES", "display_path"]

#: What a training run writes into its directory (``fit``, ``--gif``, the demo's figure); ``tb`` and ``gif`` are
#: folders. A directory holding any of these holds a run.
RUN_FILES = ("config.toml", "last.pt", "metrics.csv", "result.json", "tb", "gif", "st.gif", "st.png")


def run_files(out: str | os.PathLike[str]) -> list[str]:
    """The names of :data:`RUN_FILES` that ``out`` holds (``[]`` when it holds no run or does not exist)."""
    out = Path(out)
    return [name for name in RUN_FILES if (out / name).exists()]


def clear_run(out: str | os.PathLike[str]) -> None:
    """Delete the run in ``out``: the :data:`RUN_FILES` and leftover temporary checkpoints; other files stay."""
    out = Path(out)
    for name in run_files(out):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for pattern in (".last.*.tmp.pt", ".last.pt.*.tmp"):  # a checkpoint write cut short by a kill (now, before)
        for tmp in out.glob(pattern):
            tmp.unlink()


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``path/last.pt`` when ``path`` is a run directory."""
    path = Path(path)
    return path / "last.pt" if path.is_dir() else path


def load_run(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", *, raw: bool = False
) -> tuple[TrainConfig, nn.Module, dict[str, Any]]:
    """The config, the trained model (in eval mode, on ``device``) and the raw checkpoint of a run.

    The model holds the run's weights: their average when the run kept one (``optim.ema``), which is what it
    evaluated; ``raw=True`` gives the optimiser's own weights instead.

    Args:
        path: a checkpoint file or a run directory (its ``last.pt``).
        raw: load the optimiser's weights even when the run kept an average.

    Raises:
        DataError: the checkpoint is missing or damaged.
        ConfigError: its config is not valid for this version of torchstn.
    """
    payload = load_checkpoint(checkpoint_path(path))
    for key in ("config", "model", "in_shape", "num_classes"):
        if key not in payload:
            raise DataError(f"{checkpoint_path(path)}: not a torchstn training checkpoint (no {key!r})")
    cfg = from_dict(payload["config"])
    model = TASKS.get(cfg.task.name)(cfg).build_saved_model(tuple(payload["in_shape"]), int(payload["num_classes"]))
    weights = payload["model"]
    if "ema" in payload and not raw:  # AveragedModel's state: "module."-prefixed weights and a step counter
        weights = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    model.load_state_dict(weights)
    return cfg, model.to(device).eval(), payload


def eval_dataset(cfg: TrainConfig, payload: dict[str, Any], data: str | os.PathLike[str] | None = None):
    """The data to evaluate a run on: the tensor file ``data`` if given, else the fixed test set of the run's config.

    Raises:
        DataError: the file's image shape or class count does not fit the model.
    """
    if data is not None:
        from torchstn.data.tensor_file import TensorFile

        dataset = TensorFile(data)
    else:
        dataset = TASKS.get(cfg.task.name)(cfg).datasets(train=False)[1]
    want = tuple(payload["in_shape"])
    if tuple(dataset.image_shape) != want:
        raise DataError(
            f"{data or 'the test set'} holds images of shape {tuple(dataset.image_shape)}, but the model "
            f"was trained on {want}"
        )
    if int(dataset.num_classes) > int(payload["num_classes"]):
        raise DataError(
            f"{data or 'the test set'} has {dataset.num_classes} classes, the model {payload['num_classes']}"
        )
    return dataset


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a recorded command should show it: relative to the working directory, or ``~/...`` under the home
    directory when outside it; an absolute path elsewhere is made relative (``../..``). Never a machine's absolute
    path or home directory.

    Example:
        >>> display_path(Path.cwd() / "runs" / "table1")
        'runs/table1'
        >>> display_path("docs/results")
        'docs/results'
    """
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        if p == base or base in p.parents:
            return (prefix + p.relative_to(base).as_posix()).rstrip("/") or "."
    return Path(os.path.relpath(p, Path.cwd())).as_posix()
