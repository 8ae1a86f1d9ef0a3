"""The package's one atomic file writer: a file appears complete at its path or not at all.

Downloads, prepared datasets, checkpoints, exported models and run results all go through :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``dest`` (same suffix, so tools that look at it still work) and move it
    over ``dest`` when the block succeeds; if the block raises, remove the temporary and leave ``dest`` as it was.

    Args:
        dest: the final path; its directory is created if needed.
        durable: also ``fsync`` the file before the rename and the directory after it, so that the new file survives
            a power loss (checkpoints); without it a crash still leaves either the old file or the new one.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with atomic_path(folder / "a.txt") as tmp:
        ...     _ = tmp.write_text("done")
        >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
        ('done', ['a.txt'])
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{secrets.token_hex(4)}.tmp{dest.suffix}")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if durable:
        with contextlib.suppress(OSError):  # not every platform can open a directory (Windows)
            _fsync(dest.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
