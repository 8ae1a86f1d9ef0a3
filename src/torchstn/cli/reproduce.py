"""Reproduce a table of the paper: ``torchstn reproduce table1 [--schedule cpu|paper] [--seeds N] [--only CELLS]``.

Writes ``OUT/table1_<schedule>.md`` and ``.csv``: the paper's error, ours (mean +- std over seeds), parameter count,
training time, device and the command for every cell. Runs already finished are reused; interrupted ones resume.
"""

from __future__ import annotations

import argparse

from torchstn.train.reproduce import reproduce_table1, table1_cells
from torchstn.train.schedules import SCHEDULES


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn reproduce", description=__doc__)
    parser.add_argument("table", choices=["table1"], help="which table (table1: distorted MNIST)")
    parser.add_argument("--schedule", default="cpu", choices=list(SCHEDULES), help="training schedule (default cpu)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3, as the paper)")
    parser.add_argument("--only", default="", help="comma-separated cells or globs, e.g. RTS/st_cnn_affine,R/*")
    parser.add_argument("--out", default="docs/results", help="where the table goes (default docs/results)")
    parser.add_argument("--runs", default="runs/table1", help="where the run directories go (default runs/table1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. --set run.threads=2")
    parser.add_argument("--list", action="store_true", help="list the cells and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(args: argparse.Namespace) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.list:
        for cell, config in table1_cells(only).items():
            print(f"{cell:24s} {config}")
        return 0
    reproduce_table1(schedule=args.schedule, seeds=args.seeds, only=only, out=args.out, runs=args.runs,
                     overrides=args.overrides, progress=not args.quiet)
    return 0
