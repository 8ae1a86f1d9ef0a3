"""The ``torchstn`` command line: ``train``, ``eval``, ``show``, ``reproduce``, ``data``, ``demo``, ``export``,
``svhn`` and ``cub``.

Each subcommand lives in its own module with ``get_args_parser(parser)`` and ``main(args)`` (the torchvision
references' shape); the logic lives in :mod:`torchstn.experiments.engine`. ``torchstn --help`` lists them; ``python -m torchstn``
is the same program (for ``torchrun``).

Errors torchstn raises on purpose (bad config, missing data, unknown option) are printed as one line and give exit
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from torchstn.errors import TorchstnError

__all__ = ["main", "get_args_parser"]

_COMMANDS = ("train", "eval", "show", "reproduce", "data", "demo", "export", "svhn", "cub")


def get_args_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    from torchstn.experiments import cub, svhn
    from torchstn.experiments.cli import data, demo, evaluate, export, reproduce, show, train
    from torchstn.experiments.engine.arguments import plain_text

    parser = argparse.ArgumentParser(
        prog="torchstn", description="Spatial Transformer Networks: train, evaluate, show and reproduce the paper."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_ in [
        ("train", train, "train a model from a TOML config"),
        ("eval", evaluate, "test error of a checkpoint"),
        ("show", show, "picture of the spatial transformer's inputs, sampling grids and outputs"),
        ("reproduce", reproduce, "run the paper's experiments and write a results table"),
        ("data", data, "fetch or look at data"),
        ("demo", demo, "fetch MNIST, train an ST-CNN on RTS for a few minutes, evaluate and draw it"),
        ("export", export, "export a checkpoint to ONNX (checked with onnxruntime) or a torch.export program"),
        ("svhn", svhn, "SVHN multi-digit (paper Table 2): prepare the format-1 release, train, evaluate"),
        ("cub", cub, "CUB-200-2011 (paper Table 3): train, evaluate, show the parts"),
    ]:
        p = sub.add_parser(name, help=help_, description=plain_text(module.__doc__, help_))
        module.get_args_parser(p)
        p.set_defaults(func=module.main)
    return parser


def _version() -> str:
    import torchstn

    return f"torchstn {torchstn.__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchstn`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TorchstnError as e:
        if args.debug:
            raise
        print(f"torchstn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional dependency (matplotlib, tqdm, ...) is missing
        if args.debug:
            raise
        print(f"torchstn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a training stopped by a signal says where its checkpoint is, and which signal
        print(f"torchstn {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_status", 130)
