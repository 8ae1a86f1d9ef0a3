"""Fetch MNIST, train an ST-CNN (affine) on RTS for a few minutes, evaluate on the fixed test set and draw it.

``torchstn demo [--minutes M] [--out DIR]``: everything (data, training, evaluation on all 10,000 test images, the
figure) fits in M minutes (default 5). Prints the test error beside the paper's and writes ``DIR/st.png``.
"""

from __future__ import annotations

import argparse

from torchstn.experiments.demo import run_demo
from torchstn.experiments.engine.arguments import add_set_option, positive_int


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="torchstn demo", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="budget for the whole demo (default 5)")
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads (default: time one thread against torch's default and use the faster)",
    )
    add_set_option(parser, "optim.lr=0.004", "a field of the demo config")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(args: argparse.Namespace) -> int:
    run_demo(args.minutes, args.out, threads=args.threads, overrides=args.overrides, progress=not args.quiet)
    return 0
