"""CUB-200-2011 (paper §4.3, Table 3): ``torchstn cub train | eval | show``.

::

    torchstn cub train --root ~/data/CUB_200_2011 --model cub_st_cnn --num-parts 4 \\
        --backbone torchvision:inception_v3 --weights ~/weights/inception_v3.pth --out runs/cub-4x
    torchstn cub eval --checkpoint runs/cub-4x/last.pt
    torchstn cub show --checkpoint runs/cub-4x/last.pt --out parts.png

``train`` trains through the one engine (:func:`~torchstn.experiments.engine.trainer.fit`) with the task ``cub``
(:mod:`torchstn.experiments.cub.task`): the run folder holds ``config.toml``, ``last.pt``, ``metrics.csv`` and
``result.json``; Ctrl-C stops at an iteration boundary and ``--resume`` continues exactly; ``torchrun`` trains on
several processes, ``--amp bf16`` in mixed precision. ``torchstn train my.toml`` trains the same from a config with
``[task] name = "cub"`` (``docs/real_images.md``).

Schedule ``paper`` (the engine preset ``cub_paper``) [S]: SGD, lr 0.1 x0.1 at 10k / 20k / 25k iterations,
localisation lr x1e-4, weight decay 1e-5 (dropout 0.7 is the models' default). Not given by the paper, our choices [?]:
30k iterations, batch 32, momentum 0.9. ``smoke`` (``cub_smoke``): 10 small steps. ``--set key=value`` overrides any
config field (``optim.lr=0.01``, ``task.scale=0.4``, ``run.log_every=10``; a key of one section only needs no
section). Training images: the shorter side resized to ``size * 8 / 7``, random ``size`` crops and flips drawn from
the run's checkpointed generator; evaluation: the central crop (see :mod:`torchstn.experiments.cub.data`).
Pretrained backbones need ``--weights`` (nothing is downloaded); ``--allow-random-init`` trains from scratch, loudly.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from torchstn.errors import ConfigError
from torchstn.experiments.cub.data import IMAGENET_MEAN, IMAGENET_STD, read_cub
from torchstn.experiments.cub.models import CUB_MODELS, CUBPartsNet
from torchstn.experiments.cub.task import CUBTask
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.arguments import add_set_option
from torchstn.experiments.engine.config import TrainConfig, from_dict, parse_device, to_dict
from torchstn.experiments.engine.config_io import apply_overrides
from torchstn.experiments.engine.runs import load_run
from torchstn.experiments.engine.schedules import SCHEDULES as PRESETS
from torchstn.experiments.engine.signals import TrainingInterrupted
from torchstn.experiments.engine.trainer import fit

__all__ = [
    "SCHEDULES",
    "CUBTask",
    "get_args_parser",
    "main",
    "run",
    "train",
    "train_config",
    "evaluate",
    "show",
    "draw_part_boxes",
    "model_from_checkpoint",
]

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
    model: str = "cub_st_cnn",
    size: int = 448,
    schedule: str = "paper",
    overrides: Sequence[str] = (),
    model_options: Mapping[str, Any] | None = None,
    exclude: str | os.PathLike[str] | Sequence[int] | None = None,
    seed: int = 0,
    workers: int = 4,
    eval_every: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    log: Any = print,
    command: str | None = None,
) -> dict:
    """Train a CUB model with :func:`~torchstn.experiments.engine.trainer.fit`; returns the result (also
    ``out_dir/result.json``: ``test_accuracy``, ``test_error`` %, ``test_loss``, ...).

    The arguments make the config (:func:`train_config`). ``resume``: continue the run in ``out_dir`` exactly (a
    fresh run if it holds no checkpoint); ``overwrite``: replace the run it holds. ``log=None``: no progress output.

    Raises:
        ConfigError: unknown model / schedule / option / key, a pretrained backbone without weights, or an
            ``out_dir`` that already holds a run (without ``resume`` or ``overwrite``).
        DataError: a bad CUB folder (the missing file is named).
        TrainingInterrupted: SIGINT / SIGTERM stopped it at an iteration boundary, checkpointed.
    """
    cfg = train_config(
        root,
        model=model,
        size=size,
        schedule=schedule,
        overrides=overrides,
        model_options=model_options,
        exclude=exclude,
        seed=seed,
        workers=workers,
        eval_every=eval_every,
        device=device,
    )
    return fit(
        cfg,
        Path(out_dir),
        resume="auto" if resume else False,
        overwrite=overwrite,
        progress=log is not None,
        command=command,
    )


def _saved_run(
    checkpoint: str | os.PathLike[str], root: str | os.PathLike[str] | None, device: torch.device, **options: Any
) -> tuple[CUBTask, torch.nn.Module, dict]:
    """The task (``data.root`` replaced by ``root`` if given, ``[task]`` options by ``options``), the model (eval
    mode, on ``device``) and the checkpoint of a ``cub`` run."""
    cfg, model, payload = load_run(checkpoint, device)
    if cfg.task.name != "cub":
        raise ConfigError(f"{checkpoint}: a run of task {cfg.task.name!r}, not 'cub' (torchstn eval evaluates it)")
    data = cfg.data if root is None else dataclasses.replace(cfg.data, root=str(root))
    task = dataclasses.replace(cfg.task, options=dataclasses.replace(cfg.task.options, **options))
    return CUBTask(dataclasses.replace(cfg, data=data, task=task)), model, payload


def model_from_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, meta)`` of a ``cub train`` run (``last.pt`` or its folder); ``meta`` holds ``model``,
    ``in_shape``, ``num_classes``, ``size``, ``root``, ``exclude``, ``seed``, ``step`` and the whole ``config``.
    The backbone weights come from the checkpoint, not from ``weights``.

    Raises:
        DataError: a missing or damaged checkpoint.
        ConfigError: not a CUB run.
    """
    task, model, payload = _saved_run(path, None, parse_device(device))
    cfg, o = task.cfg, task.options
    meta = {
        "model": cfg.model.name,
        "in_shape": list(payload["in_shape"]),
        "num_classes": payload["num_classes"],
        "size": o.size,
        "root": cfg.data.root,
        "exclude": o.exclude,
        "seed": cfg.run.seed,
        "step": payload.get("step"),
        "config": to_dict(cfg),
    }
    return model, meta


def evaluate(
    checkpoint: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    split: str = "test",
    *,
    batch_size: int = 32,
    workers: int = 4,
    device: str = "cpu",
) -> dict:
    """Top-1 ``accuracy`` (a fraction), ``error`` (%), ``loss`` and ``n`` of a checkpoint on ``split`` (central
    crops; ``root`` defaults to the folder it was trained on, with the same exclusions)."""
    dev = parse_device(device)
    task, model, _ = _saved_run(checkpoint, root, dev, workers=workers)
    res = task.evaluate(
        model, task.dataset(split, augment=False), batch_size=batch_size, device=dev, limit=0, amp="off"
    )
    return {"checkpoint": str(checkpoint), "split": split, **(res or {})}  # None only when a should_stop said so


def draw_part_boxes(
    images: torch.Tensor,
    boxes: torch.Tensor,
    out: str | os.PathLike[str],
    *,
    truth: torch.Tensor | None = None,
    columns: int = 4,
) -> Path:
    """Draw each image ``(B, 3, H, W)`` in [0, 1] with its part windows ``boxes (B, N, 4)`` (normalised
    ``(x1, y1, x2, y2)``, one colour per part) and, if given, the bird's box ``truth (B, 4)`` in pixels (white),
    tiled ``columns`` wide, to a PNG. Needs pillow.

    Example:
        >>> import tempfile, os
        >>> path = draw_part_boxes(torch.rand(2, 3, 16, 16), torch.tensor([[[-1.0, -1.0, 0.0, 0.0]]] * 2),
        ...                        os.path.join(tempfile.mkdtemp(), "parts.png"))
        >>> path.name
        'parts.png'
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ImportError("drawing needs pillow: pip install pillow (or 'torchstn[experiments]')") from None
    colours = ((255, 64, 64), (64, 200, 255), (255, 220, 0), (120, 255, 120), (255, 120, 255), (255, 160, 60))
    B, _, H, W = images.shape
    cols = min(columns, B)
    rows = -(-B // cols)
    sheet = Image.new("RGB", (cols * (W + 4), rows * (H + 4)), (0, 0, 0))
    for b in range(B):
        tile = Image.fromarray((images[b].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy())
        draw = ImageDraw.Draw(tile)
        if truth is not None:
            draw.rectangle([float(v) for v in truth[b]], outline=(255, 255, 255), width=1)
        for k, box in enumerate(boxes[b]):
            x1, y1, x2, y2 = ((box + 1) / 2 * torch.tensor([W, H, W, H], dtype=box.dtype)).tolist()  # pixel edges
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colours[k % len(colours)], width=max(1, W // 112))
        r, c = divmod(b, cols)
        sheet.paste(tile, (c * (W + 4) + 2, r * (H + 4) + 2))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def show(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    n: int = 8,
    device: str = "cpu",
) -> Path:
    """Draw the windows each transformer of a ``cub_st_cnn`` checkpoint picks on the first ``n`` images of
    ``split`` (the bird's box in white) to the PNG ``out``.

    Raises:
        ConfigError: the checkpoint's model has no spatial transformers.
    """
    dev = parse_device(device)
    task, model, _ = _saved_run(checkpoint, root, dev)
    if not isinstance(model, CUBPartsNet):
        raise ConfigError(f"{checkpoint}: model {task.cfg.model.name!r} has no spatial transformers to show")
    data = task.dataset(split, augment=False)
    items = [data.sample(i) for i in range(min(n, len(data)))]
    x = torch.stack([it[0] for it in items])
    boxes = model.part_boxes(x.to(dev)).cpu()
    images = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return draw_part_boxes(images, boxes, out, truth=torch.stack([it[2] for it in items]))


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``cub`` command's parser (subcommands ``train``, ``eval``, ``show``)."""
    parser = parser or argparse.ArgumentParser(prog="torchstn cub", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cub_command", metavar="{train,eval,show}", required=True)
    t = sub.add_parser("train", help="train a CUB model")
    t.add_argument("--root", required=True, help="the CUB_200_2011 folder")
    t.add_argument("--out", required=True, help="run folder (config.toml, last.pt, metrics.csv, result.json)")
    t.add_argument(
        "--model",
        default="cub_st_cnn",
        choices=CUB_MODELS,
        help="the backbone alone or with parallel spatial transformers (default cub_st_cnn)",
    )
    t.add_argument("--size", type=int, default=448, help="input side (448; 224 for the CNN baseline)")
    t.add_argument("--num-parts", type=int, default=2, help="parallel transformers (2 or 4)")
    t.add_argument("--part-size", type=int, default=224, help="side of each transformer's output (default 224)")
    t.add_argument("--scale", type=float, default=0.5, help="fixed window half-size (0.5: half the image)")
    t.add_argument("--loc-size", type=int, default=224, help="the localisation net sees the input resized to this")
    t.add_argument("--backbone", required=True, help="tiny | torchvision:<arch> | timm:<name>")
    t.add_argument("--weights", default=None, help="state dict of the pretrained backbone")
    t.add_argument("--allow-random-init", action="store_true", help="train a pretrained backbone from scratch")
    t.add_argument("--exclude", default=None, help="file of image ids / names to leave out (ImageNet overlap)")
    t.add_argument(
        "--schedule",
        default="paper",
        choices=sorted(SCHEDULES),
        help="paper (30k iterations, default) or smoke (10 iterations: does the pipeline run)",
    )
    add_set_option(t, "optim.lr=0.01, task.scale=0.4, run.log_every=10", "a config field", dest="set")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order and crops (default 0)")
    t.add_argument("--workers", type=int, default=4, help="threads decoding each batch's images (default 4)")
    t.add_argument("--eval-every", type=int, default=0, help="evaluate every N iterations (default 0: at the end only)")
    t.add_argument("--resume", action="store_true", help="continue the run in OUT exactly where it stopped")
    t.add_argument("--overwrite", action="store_true", help="delete the run OUT holds and start afresh")
    t.add_argument("--amp", default=None, help="mixed precision: off, bf16 or fp16 (CUDA only) (run.amp)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    t.add_argument("--quiet", action="store_true", help="no progress output (the result is still printed)")
    e = sub.add_parser("eval", help="top-1 accuracy of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="a last.pt of cub train (or its run folder)")
    e.add_argument("--root", default=None, help="CUB_200_2011 folder (default: the run's)")
    e.add_argument("--split", default="test", choices=("train", "test", "all"), help="default test")
    e.add_argument("--workers", type=int, default=4, help="threads decoding the images (default 4)")
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    s = sub.add_parser("show", help="draw the parts each transformer picks")
    s.add_argument("--checkpoint", required=True, help="a last.pt of cub train with --model cub_st_cnn")
    s.add_argument("--out", required=True, help="PNG to write")
    s.add_argument("--root", default=None, help="CUB_200_2011 folder (default: the run's)")
    s.add_argument("--split", default="test", choices=("train", "test", "all"), help="default test")
    s.add_argument("-n", type=int, default=8, help="images")
    return parser


def _train_command(args: argparse.Namespace) -> int:
    """``torchstn cub train``: print the result as JSON (rank 0), or after a signal the way to go on."""
    options: dict[str, Any] = {
        "backbone": args.backbone,
        "weights": args.weights,
        "allow_random_init": args.allow_random_init,
    }
    if args.model == "cub_st_cnn":
        options.update(num_parts=args.num_parts, part_size=args.part_size, scale=args.scale, loc_size=args.loc_size)
    overrides = list(args.set) + ([f"run.amp={args.amp}"] if args.amp is not None else [])
    try:
        result = train(
            args.root,
            args.out,
            model=args.model,
            size=args.size,
            schedule=args.schedule,
            overrides=overrides,
            model_options=options,
            exclude=args.exclude,
            seed=args.seed,
            workers=args.workers,
            eval_every=args.eval_every,
            resume=args.resume,
            overwrite=args.overwrite,
            device=args.device,
            log=None if args.quiet else print,
        )
    except TrainingInterrupted as e:
        if distributed.is_main():
            go_on = "continue with the same command and --resume" if e.saved else "nothing to resume"
            print(f"torchstn cub train: {e}; {go_on}", file=sys.stderr, flush=True)
        return e.exit_status
    if distributed.is_main():
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2, default=str))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run parsed arguments (for a CLI that builds the parser with :func:`get_args_parser`)."""
    if args.cub_command == "train":
        return _train_command(args)
    if args.cub_command == "eval":
        res = evaluate(args.checkpoint, args.root, args.split, workers=args.workers, device=args.device)
        print(json.dumps(res, indent=2))
    else:
        print(show(args.checkpoint, args.out, args.root, split=args.split, n=args.n))
    return 0


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """``torchstn cub ...``: parse ``argv`` (or take an already parsed namespace) and run it; returns the exit
    status."""
    args = argv if isinstance(argv, argparse.Namespace) else get_args_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
