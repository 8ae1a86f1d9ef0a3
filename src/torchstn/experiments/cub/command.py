"""The ``torchstn cub`` command (``train | eval | show``): its parser and what each subcommand runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from torchstn.experiments.cub.evaluation import evaluate, show
from torchstn.experiments.cub.models import CUB_MODELS
from torchstn.experiments.cub.training import SCHEDULES, train
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.arguments import add_run_options, add_set_option, run_keywords, run_overrides
from torchstn.experiments.engine.signals import TrainingInterrupted

__all__ = ["get_args_parser", "run", "main"]

_DESCRIPTION = "CUB-200-2011 (paper §4.3, Table 3): torchstn cub train | eval | show."


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``cub`` command's parser (subcommands ``train``, ``eval``, ``show``)."""
    parser = parser or argparse.ArgumentParser(prog="torchstn cub", description=_DESCRIPTION)
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
    add_run_options(t, ("seed",))
    t.add_argument("--workers", type=int, default=4, help="threads decoding each batch's images (default 4)")
    add_run_options(t, ("eval_every", "resume", "overwrite", "amp", "device", "quiet"))
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
    try:
        result = train(
            args.root,
            args.out,
            model=args.model,
            size=args.size,
            schedule=args.schedule,
            overrides=[*args.set, *run_overrides(args)],
            model_options=options,
            exclude=args.exclude,
            workers=args.workers,
            **run_keywords(args),
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
