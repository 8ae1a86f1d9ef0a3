"""Argument types shared by the commands, so a bad value is an argparse error (one line, exit status 2) before
anything runs."""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


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
