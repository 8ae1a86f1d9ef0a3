"""Reproduce an experiment of the paper: ``torchstn reproduce EXPERIMENT [--schedule cpu|paper] [--seeds N]
[--only CELLS]``.

EXPERIMENT is ``table1`` (distorted MNIST R/RTS/P/E), ``tc`` (translated cluttered MNIST), ``addition`` (MNIST
addition) or ``3d`` (the 3D transformer). Writes ``OUT/<experiment>_<schedule>.md`` and ``.csv``: the paper's error,
ours (mean +- std over seeds), parameter count, iterations, training time, device and the command for every cell.
Runs already finished are reused; interrupted ones resume.
"""

from __future__ import annotations

import argparse

from torchstn.train.reproduce import EXPERIMENTS, experiment_cells, reproduce
from torchstn.train.schedules import SCHEDULES


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn reproduce", description=__doc__)
    parser.add_argument("experiment", choices=list(EXPERIMENTS),
                        help="table1 (distorted MNIST), tc (cluttered MNIST), addition (MNIST addition), 3d")
    parser.add_argument("--schedule", default="cpu", choices=list(SCHEDULES), help="training schedule (default cpu)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3, as the paper)")
    parser.add_argument("--only", default="", help="comma-separated cells or globs, e.g. RTS/st_cnn_affine,R/*")
    parser.add_argument("--out", default="docs/results", help="where the table goes (default docs/results)")
    parser.add_argument("--runs", help="where the run directories go (default runs/<experiment>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. --set run.threads=2 --set optim.iterations=1000")
    parser.add_argument("--list", action="store_true", help="list the cells and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(args: argparse.Namespace) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.list:
        for cell, config in experiment_cells(args.experiment, only).items():
            print(f"{cell:28s} {config}")
        return 0
    reproduce(args.experiment, schedule=args.schedule, seeds=args.seeds, only=only, out=args.out, runs=args.runs,
              overrides=args.overrides, progress=not args.quiet)
    return 0
