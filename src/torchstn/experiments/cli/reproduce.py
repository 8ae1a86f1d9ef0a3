"""Reproduce an experiment of the paper: ``torchstn reproduce EXPERIMENT [options]``.

EXPERIMENT is ``table1`` (distorted MNIST R/RTS/P/E), ``tc`` (translated cluttered MNIST), ``addition`` (MNIST
addition), ``3d`` (the 3D transformer) or ``colocalisation``. The classification experiments take
``[--schedule cpu|paper] [--seeds N] [--only CELLS] [--set KEY=VALUE]`` and write ``OUT/<experiment>_<schedule>.md``
and ``.csv`` (``<experiment>_<schedule>+optim.iterations=N.md`` for a run with that override, and so on), OUT being the
runs directory (``runs/<experiment>``) unless ``--out`` says otherwise: the paper's error, ours (mean +- std over
seeds; one seed shows its error and n=1), parameter count, iterations, training time, device and the command for
every cell (paths relative, with ``--runs`` / ``--out`` when not the defaults). Runs already finished are reused
(refused, with the differing fields named, if the cell's config has changed since); interrupted ones resume.
``--list`` shows the cells, each with the name that trains it alone (``torchstn train table1:RTS/st_cnn_affine``) and
the paper's error.
``colocalisation`` has its own options (``torchstn reproduce colocalisation --help``).
"""

from __future__ import annotations

import argparse

from torchstn.experiments.engine.arguments import add_set_option, plain_text
from torchstn.experiments.engine.schedules import SCHEDULES
from torchstn.experiments.reproduce import reproduce
from torchstn.experiments.specs import EXPERIMENTS


def _table_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schedule", default="cpu", choices=list(SCHEDULES), help="training schedule (default cpu)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3, as the paper)")
    parser.add_argument("--only", default="", help="comma-separated cells or globs, e.g. RTS/st_cnn_affine,R/*")
    parser.add_argument("--runs", help="where the run directories go (default runs/<experiment>)")
    parser.add_argument(
        "--out",
        help="where the table goes (default: beside the runs; this project's docs tables: "
        "--out docs/results from the repository root)",
    )
    add_set_option(parser, "--set run.threads=2 --set optim.iterations=1000", "the config of every run")
    parser.add_argument("--list", action="store_true", help="list the cells and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_table)


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from torchstn.experiments import colocalisation

    parser = parser or argparse.ArgumentParser(prog="torchstn reproduce", description=__doc__)
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name in EXPERIMENTS:
        title = EXPERIMENTS.get(name).title
        _table_options(sub.add_parser(name, help=title, description=f"{title}: train every cell, write the table"))
    p = sub.add_parser(
        "colocalisation",
        help="co-localisation (Appendix A.2): triplet loss, IoU > 0.5 rates",
        description=plain_text(colocalisation.__doc__),
    )
    colocalisation.get_args_parser(p)
    p.set_defaults(run=colocalisation.main)
    return parser


def _run_table(args: argparse.Namespace) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.list:
        spec = EXPERIMENTS.get(args.experiment)
        cells = spec.select(only)
        width = max(len(c.name) for c in cells)
        for cell in cells:
            paper = "-" if cell.paper is None else f"{cell.paper:.1f}"
            print(f"{cell.name:{width}s}  {spec.config_name(cell):{width + len(spec.name) + 1}s}  paper {paper}")
        return 0
    reproduce(
        args.experiment,
        schedule=args.schedule,
        seeds=args.seeds,
        only=only,
        out=args.out,
        runs=args.runs,
        overrides=args.overrides,
        progress=not args.quiet,
    )
    return 0


def main(args: argparse.Namespace) -> int:
    return args.run(args)
