"""What the commands' parsers share: argument types, so a bad value is an argparse error (one line, exit status 2)
before anything runs, and help text made from docstrings."""

from __future__ import annotations

import argparse
import re

__all__ = ["positive_int", "plain_text"]


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
