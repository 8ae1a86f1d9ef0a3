"""What the commands' parsers share (``torchstn train``, ``reproduce``, ``demo`` and the experiments' own commands):
argument types, so a bad value is an argparse error (one line, exit status 2) before anything runs, the ``--set``
option every training command takes, and help text made from docstrings."""

from __future__ import annotations

import argparse
import re

__all__ = ["positive_int", "plain_text", "add_set_option"]


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
