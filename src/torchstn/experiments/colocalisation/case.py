"""One co-localisation case on the engine: its config (:func:`case_config`), its run directory (:func:`case_name`,
:func:`run_case`: reused, resumed or trained) and :func:`train_colocalisation`, one case from Python.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torchstn.data import CoLocalisation
from torchstn.errors import ConfigError, DataError
from torchstn.experiments.colocalisation.encoder import Encoder
from torchstn.experiments.colocalisation.task import SCHEDULE, window_options
from torchstn.experiments.colocalisation.window import Window
from torchstn.experiments.engine.config import TrainConfig, from_dict
from torchstn.experiments.engine.runs import load_run
from torchstn.experiments.engine.trainer import config_differences, fit
from torchstn.nn import SpatialTransformer

__all__ = ["STEPS", "case_config", "case_name", "run_case", "localiser_of", "train_colocalisation"]

#: SGD steps of a case (the schedule ``colocalisation``'s).
STEPS: int = SCHEDULE["iterations"]


def case_config(
    digit: int,
    clutter: bool,
    *,
    encoder: str | Path,
    steps: int = STEPS,
    seed: int = 0,
    n: int = 100,
    features: str = "concat",
    synthetic: int = 0,
    root: str | None = None,
    threads: int | None = None,
    overrides: Sequence[str] = (),
    **options: Any,
) -> TrainConfig:
    """The config of one co-localisation case: task ``colocalisation`` on schedule ``colocalisation`` for ``steps``
    iterations (its lr step moves with them), all ``n`` images per step, the set and the crops seeded by ``seed``.

    Args:
        encoder: the encoder's run directory or checkpoint (``task.encoder``).
        synthetic, root: ``data.synthetic`` (synthetic digits: a smoke run) and ``data.root``.
        overrides: ``--set`` style ``key=value`` changes applied last.
        options: other :class:`Options` fields (``alpha``, ``start_scale``, ...).

    Raises:
        ConfigError: a bad value or override.

    Example:
        >>> cfg = case_config(3, True, encoder="runs/colocalisation/encoder", overrides=["task.alpha=0.5"])
        >>> cfg.task.name, cfg.task.options.clutter, cfg.task.options.alpha, cfg.optim.batch_size
        ('colocalisation', True, 0.5, 100)
    """
    from torchstn.experiments.engine.config_io import apply_overrides

    data: dict[str, Any] = {"variant": "colocalisation", "synthetic": int(synthetic)}
    if root is not None:
        data["root"] = str(root)
    run: dict[str, Any] = {"seed": int(seed), "log_every": 20, "checkpoint_every": 50}
    if threads:
        run["threads"] = int(threads)
    cfg = from_dict(
        {
            "data": data,
            "run": run,
            "optim": {"schedule": "colocalisation", "iterations": int(steps), "batch_size": int(n)},
            "task": {
                "name": "colocalisation",
                "digit": digit,
                "clutter": bool(clutter),
                "n": int(n),
                "encoder": str(encoder),
                "features": features,
                **options,
            },
        }
    )
    return apply_overrides(cfg, overrides) if overrides else cfg


def case_name(digit: int, clutter: bool) -> str:
    """The run directory name of a case: ``digit3_plain``, ``digit3_cluttered``."""
    return f"digit{digit}_{'cluttered' if clutter else 'plain'}"


def run_case(cfg: TrainConfig, run_dir: Path, *, fresh: bool = False, command: str | None = None) -> dict[str, Any]:
    """Train one case into ``run_dir`` and return its ``result.json``. A finished case is reused when its saved
    config computes what ``cfg`` computes (:func:`~torchstn.experiments.engine.trainer.config_differences`); an
    interrupted one resumes; ``fresh`` trains it again.

    Raises:
        ConfigError: ``run_dir`` holds a case trained with another config (the differing keys named).
    """
    done = run_dir / "result.json"
    if done.is_file() and not fresh:
        result = json.loads(done.read_text())
        diff = config_differences(from_dict(result["config"]), cfg) if "config" in result else ["(none recorded)"]
        if diff:
            raise ConfigError(
                f"{run_dir} was trained with another config than this case's (it differs in "
                f"{', '.join(diff)}); use another --out, or --fresh to train it again"
            )
        if result.get("completed"):
            return result
    return fit(cfg, run_dir, resume=False if fresh else "auto", overwrite=fresh, progress=False, command=command)


def localiser_of(run_dir: str | Path) -> SpatialTransformer:
    """The trained localiser of a case's run directory.

    Raises:
        DataError: a run whose model is not a spatial transformer (not a co-localisation case).
    """
    _, st, _ = load_run(run_dir)
    if not isinstance(st, SpatialTransformer):
        raise DataError(f"{run_dir} holds a {type(st).__name__}, not a co-localisation case's spatial transformer")
    return st


def _encoder_settings(encoder: Encoder | str | Path) -> tuple[str, str, bool, str]:
    """``(path, features, normalise, fit)`` of an encoder given as a run directory, a checkpoint or a loaded Encoder.

    Raises:
        ConfigError: an :class:`Encoder` not loaded from a run (no ``source``).
    """
    if not isinstance(encoder, Encoder):
        return str(encoder), "concat", True, "pad"
    if not encoder.source:
        raise ConfigError(
            "encoder must be a run of `torchstn train colocalisation_encoder` or an Encoder loaded from one with "
            "load_encoder"
        )
    return encoder.source, encoder.features, encoder.normalise, encoder.fit


def _new_spellings(overrides: Sequence[str]) -> list[str]:
    """``--set`` overrides; the old schedule spelling ``lr=0.1`` becomes ``optim.lr=0.1``, with a warning."""
    out = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key and "." not in key:
            warnings.warn(
                f"the schedule override {item!r} is now spelled 'optim.{item.strip()}'",
                DeprecationWarning,
                stacklevel=3,
            )
            item = f"optim.{item.strip()}"
        out.append(item)
    return out


def train_colocalisation(
    digit: int,
    *,
    clutter: bool,
    encoder: Encoder | str | Path,
    steps: int = STEPS,
    seed: int = 0,
    n: int = 100,
    alpha: float = 1.0,
    window: Window | None = None,
    schedule: str = "colocalisation",
    overrides: Sequence[str] = (),
    out_dir=None,
    resume: bool = False,
    root=None,
    source=None,
    log: Callable[[str], None] | None = print,
    log_every: int = 20,
    eval_every: int = 0,
) -> SpatialTransformer:
    """Train one case (:func:`case_config`) with :func:`~torchstn.experiments.engine.trainer.fit` into ``out_dir``
    (a temporary folder if ``None``): ``config.toml``, ``last.pt``, ``metrics.csv``, ``result.json``.

    Args:
        encoder: the encoder's run directory or checkpoint, or an :class:`Encoder` loaded from one
            (:func:`load_encoder`; its ``features``, ``normalise`` and ``fit`` are used).
        window: the window's settings (default :class:`Window`'s).
        schedule, overrides: the engine schedule and ``--set`` changes (``optim.lr=0.1``; the old ``lr=0.1``
            still works, with a DeprecationWarning).
        resume: continue the run in ``out_dir`` (its config must be this one); without it ``out_dir`` must hold
            no run.
        source: ``(images, labels)`` digits to draw the set from instead of MNIST (``data.root``).
        log: ``None`` trains quietly, anything else shows the engine's progress.

    Returns:
        The trained spatial transformer, in eval mode.

    Raises:
        ConfigError: an encoder not loaded from a run, a resume with other settings, or ``out_dir`` holding a run.
    """
    path, features, normalise, encoder_fit = _encoder_settings(encoder)
    sets = [f"optim.schedule={schedule}", f"run.log_every={log_every}", f"run.eval_every={eval_every}"]
    cfg = case_config(
        digit,
        clutter,
        encoder=path,
        steps=steps,
        seed=seed,
        n=n,
        features=features,
        root=root,
        overrides=[*sets, *_new_spellings(overrides)],
        alpha=alpha,
        normalise=normalise,
        encoder_fit=encoder_fit,
        **window_options(window or Window()),
    )
    datasets = None
    if source is not None:  # a fixed set: the same for training and evaluation
        data = CoLocalisation(digit, n=n, clutter=clutter, seed=seed, root=root, source=source)
        datasets = (data, data)
    with tempfile.TemporaryDirectory() if out_dir is None else contextlib.nullcontext(out_dir) as folder:
        fit(cfg, folder, resume="auto" if resume else False, progress=log is not None, datasets=datasets)
        return localiser_of(folder)
