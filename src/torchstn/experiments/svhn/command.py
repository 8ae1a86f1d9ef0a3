"""The ``torchstn svhn`` command (prepare the format-1 release, train, evaluate), and the same as functions:
:func:`~torchstn.experiments.svhn.prepare.prepare_svhn`, :func:`svhn_config` + :func:`train`, :func:`evaluate`.

``train`` builds the engine config of an SVHN run from its flags (the task ``svhn``, see
:mod:`torchstn.experiments.svhn.task`) and calls :func:`~torchstn.experiments.engine.trainer.fit`; ``eval`` loads a
run with :func:`~torchstn.experiments.engine.runs.load_run` and evaluates it with the task. The old spellings still
work and warn: ``--set key=value`` with a bare schedule key (now ``--set optim.key=value``) and ``--model-option
key=value`` (now ``--set task.key=value``, or ``model.channels`` / ``model.bound`` / ``model.transform``).
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchstn.errors import ConfigError
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.arguments import add_run_options, add_set_option, run_keywords, run_overrides
from torchstn.experiments.engine.config import TrainConfig, from_dict, parse_device, to_dict
from torchstn.experiments.engine.config_io import apply_overrides
from torchstn.experiments.engine.runs import load_run
from torchstn.experiments.engine.signals import TrainingInterrupted
from torchstn.experiments.engine.trainer import fit
from torchstn.experiments.svhn.models import SVHN_MODELS
from torchstn.experiments.svhn.prepare import prepare_svhn
from torchstn.experiments.svhn.task import EVAL_SPLITS, SCHEDULES, SVHNTask

__all__ = [
    "svhn_config",
    "train",
    "evaluate",
    "model_from_checkpoint",
    "parse_model_options",
    "get_args_parser",
    "run",
    "main",
    "OLD_SCHEDULE_KEYS",
]

#: The keys of the old schedule overrides (``--set lr=0.1``), now ``optim.<key>``.
OLD_SCHEDULE_KEYS = ("lr", "momentum", "weight_decay", "batch_size", "iterations", "lr_steps", "gamma", "loc_lr_mult")
_MODEL_FIELDS = ("channels", "bound", "transform")  # model options that are [model] fields, not task options


def svhn_config(
    data_dir: str | None,
    *,
    model: str = "svhn_st_cnn_multi",
    size: int = 64,
    schedule: str = "paper",
    crop: int | None = None,
    seed: int = 0,
    eval_every: int = 0,
    eval_split: str = "val",
    eval_limit: int | None = None,
    device: str = "cpu",
    model_options: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """The engine config of an SVHN run, made of the ``torchstn svhn train`` flags (same names, same defaults).

    Args:
        data_dir: the cache folder of ``prepare`` (``data.root``).
        schedule: ``paper`` or ``smoke`` (:data:`~torchstn.experiments.svhn.task.SCHEDULES`), or any registered
            engine schedule.
        eval_limit: evaluate on the first N held-out images only (``task.held_out_limit``).
        model_options: options of the SVHN model (``task.*``, or ``model.channels`` / ``bound`` / ``transform``).
        overrides: ``--set`` items (``section.key=value``; the old bare schedule keys warn and still work).

    Raises:
        ConfigError: an unknown model, schedule, key or option, or a value of the wrong type.

    Example:
        >>> cfg = svhn_config("cache", model="svhn_cnn", schedule="smoke", overrides=["optim.iterations=4"])
        >>> cfg.task.name, cfg.data.root, cfg.optim.schedule, cfg.optim.iterations
        ('svhn', 'cache', 'svhn_smoke', 4)
    """
    task: dict[str, Any] = {"name": "svhn", "size": size, "eval_split": eval_split, "held_out_limit": eval_limit or 0}
    if crop is not None:
        task["crop"] = crop
    data = {
        "task": task,
        "model": {"name": model},
        "data": {"variant": "svhn", "root": data_dir},
        "optim": {"schedule": f"svhn_{schedule}" if schedule in SCHEDULES else schedule},
        "run": {"seed": seed, "eval_every": eval_every, "device": device},
    }
    for key, value in (model_options or {}).items():
        data["model" if key in _MODEL_FIELDS else "task"][key] = value
    return apply_overrides(from_dict(data), [_new_spelling(item) for item in overrides])


def _literal(text: str) -> Any:
    """A value of the old ``key=value`` spelling: a Python literal, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _toml_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _new_spelling(item: str) -> str:
    """``--set`` ``item`` in the engine's spelling: an old schedule override (a bare key of
    :data:`OLD_SCHEDULE_KEYS`, Python literals, one int for ``lr_steps``) becomes ``optim.key=value``, with a
    DeprecationWarning; anything else is returned as it is."""
    key, sep, text = (s.strip() for s in item.partition("="))
    if not sep or key not in OLD_SCHEDULE_KEYS:
        return item
    value = _literal(text)
    if key == "lr_steps" and not isinstance(value, (list, tuple)):
        value = [value]
    new = f"optim.{key}={_toml_text(value)}"
    warnings.warn(f"--set {item} is the old spelling of --set {new}", DeprecationWarning, stacklevel=3)
    return new


def parse_model_options(items: Sequence[str]) -> dict[str, Any]:
    """``--model-option key=value`` items (Python literals), each with a DeprecationWarning naming its ``--set``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise ConfigError(f"a model option must look like key=value, got {item!r}")
        out[key] = _literal(text)
        section = "model" if key in _MODEL_FIELDS else "task"
        warnings.warn(
            f"--model-option {item} is the old spelling of --set {section}.{key}={_toml_text(out[key])}",
            DeprecationWarning,
            stacklevel=3,
        )
    return out


def train(
    data_dir: str,
    out_dir: str,
    *,
    overrides: Sequence[str] = (),
    resume: bool | str = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
    command: str | None = None,
    **flags: Any,
) -> dict[str, Any]:
    """Train an SVHN model on the cache written by ``prepare``; returns the result (also ``out_dir/result.json``).

    Args:
        flags: the keywords of :func:`svhn_config` (``model``, ``size``, ``schedule``, ``crop``, ...).
        resume: ``True`` continues the run in ``out_dir`` if it has a checkpoint and starts it otherwise (fit's
            ``"auto"``); the config must be the one it was trained with.
        overwrite: replace the run ``out_dir`` holds.
        log: ``None`` for no progress output.

    Raises:
        ConfigError: unknown model, schedule, key or model option; a resume with another config.
        DataError: the cache is missing (the message says how to make it).
        TrainingInterrupted: Ctrl-C or SIGTERM stopped it (checkpointed: ``resume=True`` continues exactly).
    """
    cfg = svhn_config(data_dir, overrides=overrides, **flags)
    return fit(
        cfg,
        out_dir,
        resume="auto" if resume is True else resume,
        overwrite=overwrite,
        progress=log is not None,
        command=command,
    )


def evaluate(
    checkpoint: str, data_dir: str | None = None, split: str = "test", *, batch_size: int = 256, device: str = "cpu"
) -> dict[str, Any]:
    """Sequence error (a fraction) and mean loss of a run (a ``last.pt`` or its folder) on a cached split, read
    from ``data_dir`` (default: the cache it was trained on).

    Raises:
        ConfigError: the run is not an SVHN run.
        DataError: the checkpoint or the split is missing.
    """
    cfg, model, payload = load_run(checkpoint, device)
    if cfg.task.name != "svhn":
        raise ConfigError(f"{checkpoint} is a {cfg.task.name!r} run, not an svhn one: evaluate it with torchstn eval")
    task = SVHNTask(cfg)
    data = task.held_out(split, data_dir)
    res = task.evaluate(model, data, batch_size=batch_size, device=parse_device(device), limit=0, amp="off")
    assert res is not None  # only a should_stop callback abandons an evaluation
    return {
        "checkpoint": str(checkpoint),
        "split": split,
        "step": int(payload["step"]),
        "sequence_error": res["error"] / 100,
        "n": res["n"],
        "loss": res["loss"],
    }


def model_from_checkpoint(path: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, config as a dict)`` of a run. Deprecated: use
    :func:`torchstn.experiments.engine.runs.load_run`, which also gives the raw checkpoint."""
    warnings.warn(
        "model_from_checkpoint is deprecated: use torchstn.experiments.engine.runs.load_run",
        DeprecationWarning,
        stacklevel=2,
    )
    cfg, model, _ = load_run(path, device)
    return model, to_dict(cfg)


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``svhn`` command's parser (subcommands ``prepare``, ``train``, ``eval``)."""
    parser = parser or argparse.ArgumentParser(prog="torchstn svhn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="svhn_command", metavar="{prepare,train,eval}", required=True)
    p = sub.add_parser("prepare", help="crop the format-1 release into a cache of 64px or 128px sequences")
    p.add_argument("--src", required=True, help="folder with train/, test/ (and extra/) of the format-1 release")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--size", type=int, default=64, help="64 (default) or 128 (the looser crops)")
    p.add_argument("--no-extra", action="store_true", help="leave out the 202k extra images")
    p.add_argument(
        "--val-size", type=int, default=5000, help="training images held out as the val split (default 5000)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the val draw (default 0)")
    p.add_argument("--context", type=float, default=None, help="extra enlargement (default 1, or size/64)")
    _train_arguments(sub.add_parser("train", help="train a model on a prepared cache"))
    e = sub.add_parser("eval", help="sequence error of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="a last.pt of svhn train, or its run folder")
    e.add_argument("--data", default=None, help="cache folder (default: the one the run used)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="default test")
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    e.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    return parser


def _train_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("--data", required=True, help="the cache folder of `prepare` (data.root)")
    t.add_argument("--out", required=True, help="run folder (config.toml, last.pt, metrics.csv, result.json)")
    t.add_argument(
        "--model",
        default="svhn_st_cnn_multi",
        choices=SVHN_MODELS,
        help="the CNN, one ST in front, or an ST before each of the first four conv layers (default)",
    )
    t.add_argument("--size", type=int, default=64, help="which prepared crops to read: 64 (default) or 128")
    t.add_argument(
        "--schedule",
        default="paper",
        choices=sorted(SCHEDULES),
        help="paper (400k iterations, default) or smoke (20 iterations: does the pipeline run)",
    )
    add_set_option(t, "optim.lr=0.02, task.batch_norm=true, run.eval_every=5000", "a config field", dest="set")
    t.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="deprecated: --set task.KEY=VALUE (model.channels, model.bound, model.transform)",
    )
    t.add_argument("--crop", type=int, default=None, help="random crops of this size at train time (54: Goodfellow)")
    add_run_options(t, ("seed", "eval_every"))
    t.add_argument(
        "--eval-split",
        default="val",
        choices=EVAL_SPLITS,
        help="held-out split evaluated during training (default val)",
    )
    t.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N held-out images only")
    add_run_options(t, ("resume", "overwrite", "device", "threads", "amp", "quiet"))


def run(args: argparse.Namespace) -> int:
    """Run parsed arguments (for a CLI that builds the parser with :func:`get_args_parser`)."""
    if args.svhn_command == "prepare":
        report = prepare_svhn(
            args.src,
            args.out,
            args.size,
            extra=not args.no_extra,
            val_size=args.val_size,
            seed=args.seed,
            context=args.context,
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.svhn_command == "train":
        return _train(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate(args.checkpoint, args.data, args.split, batch_size=args.batch_size, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    """``svhn train``: the flags as a config, then :func:`fit`; exit status 130 / 143 after a signal."""
    try:
        result = train(
            args.data,
            args.out,
            model=args.model,
            size=args.size,
            schedule=args.schedule,
            overrides=[*run_overrides(args), *args.set],
            model_options=parse_model_options(args.model_option),
            crop=args.crop,
            eval_split=args.eval_split,
            eval_limit=args.eval_limit,
            **run_keywords(args),
            command=_command(args),
        )
    except TrainingInterrupted as e:
        if distributed.is_main():
            print(
                f"torchstn svhn train: {e}; continue with: torchstn svhn train ... --resume (the same flags), or "
                f"torchstn train --resume --out {shlex.quote(args.out)}",
                file=sys.stderr,
                flush=True,
            )
        return e.exit_status
    if distributed.is_main():
        split = args.eval_split
        print(
            json.dumps(
                {
                    "steps": result["steps"],
                    f"{split}_sequence_error": result["test_error"] / 100,
                    f"{split}_n": result["test_images"],
                    "out": args.out,
                },
                indent=2,
            )
        )
    return 0


def _command(args: argparse.Namespace) -> str:
    """The ``svhn train`` command line of ``args`` (recorded in ``result.json``): the flags not at their default."""
    defaults = vars(get_args_parser().parse_args(["train", "--data", args.data, "--out", args.out]))
    words = ["torchstn", "svhn", "train", "--data", args.data, "--out", args.out]
    for key, value in vars(args).items():
        if key in defaults and value != defaults[key] and key not in ("func", "command", "debug"):
            flag = "--" + key.replace("_", "-")
            values = value if isinstance(value, list) else [value]
            words += [flag] if value is True else [w for v in values for w in (flag, str(v))]
    return " ".join(shlex.quote(w) for w in words)


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """``torchstn svhn ...``: parse ``argv`` (or take an already parsed namespace) and run it; returns 0."""
    args = argv if isinstance(argv, argparse.Namespace) else get_args_parser().parse_args(argv)
    return run(args)
