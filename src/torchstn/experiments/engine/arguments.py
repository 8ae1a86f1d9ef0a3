"""What the commands' parsers share (``torchstn train``, ``reproduce``, ``demo`` and the experiments' own commands):
argument types, so a bad value is an argparse error (one line, exit status 2) before anything runs, the ``--set``
option every training command takes, the run flags of the experiments' training commands (``--seed``, ``--resume``,
``--amp``, ...) and help text made from docstrings."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import Any

from torchstn._checks import look_up_option

__all__ = [
    "positive_int",
    "plain_text",
    "add_set_option",
    "RUN_OPTIONS",
    "add_run_options",
    "run_overrides",
    "run_keywords",
]

#: The run flags :func:`add_run_options` adds: ``dest -> (add_argument keywords)``, in the order they are added.
RUN_OPTIONS: dict[str, dict[str, Any]] = {
    "seed": dict(type=int, default=0, help="seed of the weights, the batch order and the crops (run.seed, default 0)"),
    "eval_every": dict(type=int, default=0, help="evaluate every N iterations (default 0: at the end only)"),
    "resume": dict(
        action="store_true", help="continue the run in OUT exactly where it stopped, if it has a checkpoint"
    ),
    "overwrite": dict(action="store_true", help="delete the run OUT holds and start afresh"),
    "device": dict(default="cpu", help="cpu, cuda or cuda:N (default cpu)"),
    "threads": dict(type=int, default=None, help="CPU threads (run.threads; default: torch's)"),
    "amp": dict(default=None, help="mixed precision: off, bf16 or fp16 (CUDA only) (run.amp)"),
    "quiet": dict(action="store_true", help="no progress output (the result is still printed)"),
}
_AS_OVERRIDES = ("threads", "amp")  # the flags that reach the config as --set run.<flag>=VALUE


def plain_text(doc: str | None, default: str = "") -> str:
    """The first line of a docstring as terminal text: reST literals and roles unwrapped.

    Example:
        >>> plain_text("Train: ``torchstn train CONFIG`` (see :func:`~torchstn.experiments.engine.fit`).")
        'Train: torchstn train CONFIG (see torchstn.experiments.engine.fit).'
    """
    lines = (doc or "").strip().splitlines()
    text = lines[0] if lines else default
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text).replace("``", "")


def positive_int(text: str) -> int:
    """An ``argparse`` ``type=`` for counts such as ``-n``, ``--batch-size`` and ``--threads``.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not an integer of at least 1.

    Example:
        >>> positive_int("8")
        8
        >>> positive_int("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a positive integer, got '0'
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_set_option(
    parser: argparse.ArgumentParser, example: str, what: str = "a config field", dest: str = "overrides"
):
    """Add ``--set KEY=VALUE`` (repeatable; the values land in ``args.<dest>`` as a list of strings, applied by
    :func:`~torchstn.experiments.engine.config_io.apply_overrides`).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = add_set_option(p, "optim.lr=0.01")
        >>> p.parse_args(["--set", "optim.lr=0.01", "--set", "run.seed=1"]).overrides
        ['optim.lr=0.01', 'run.seed=1']
    """
    return parser.add_argument(
        "--set", dest=dest, action="append", default=[], metavar="KEY=VALUE", help=f"override {what}, e.g. {example}"
    )


def add_run_options(
    parser: argparse.ArgumentParser, options: Sequence[str] = tuple(RUN_OPTIONS), **help: str
) -> argparse.ArgumentParser:
    """Add the run flags ``options`` (names of :data:`RUN_OPTIONS`: ``--seed``, ``--eval-every``, ``--resume``,
    ``--overwrite``, ``--device``, ``--threads``, ``--amp``, ``--quiet``), each with its type, default and help;
    ``help`` replaces the help of some (``seed="seed of the sets"``). Read them back with :func:`run_overrides` and
    :func:`run_keywords`.

    Raises:
        OptionError: an unknown option name (with a suggestion).

    Example:
        >>> p = add_run_options(argparse.ArgumentParser(), ("seed", "amp", "quiet"))
        >>> args = p.parse_args(["--seed", "3", "--amp", "bf16"])
        >>> args.seed, args.amp, args.quiet
        (3, 'bf16', False)
    """
    for name in [*options, *help]:
        look_up_option("run option", name, list(RUN_OPTIONS))
    for name in options:
        spec = dict(RUN_OPTIONS[name], help=help.get(name, RUN_OPTIONS[name]["help"]))
        parser.add_argument("--" + name.replace("_", "-"), **spec)
    return parser


def run_overrides(args: argparse.Namespace) -> list[str]:
    """The run flags of ``args`` that are config fields, as ``--set`` items: ``run.threads=N`` and ``run.amp=X``
    for the ones given (an absent, ``None``, ``0`` or empty flag gives nothing).

    Example:
        >>> run_overrides(argparse.Namespace(threads=4, amp=None, seed=1))
        ['run.threads=4']
    """
    return [f"run.{name}={value}" for name in _AS_OVERRIDES if (value := getattr(args, name, None))]


def run_keywords(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The run flags of ``args`` as the keywords of the experiments' ``train`` functions: ``seed``,
    ``eval_every``, ``device``, ``resume``, ``overwrite`` (those the parser has) and ``log`` (``None`` with
    ``--quiet``).

    Example:
        >>> run_keywords(argparse.Namespace(seed=2, resume=True, quiet=True))
        {'seed': 2, 'resume': True, 'log': None}
    """
    names = ("seed", "eval_every", "device", "resume", "overwrite")
    keywords: dict[str, Any] = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return {**keywords, "log": None if getattr(args, "quiet", False) else log}
