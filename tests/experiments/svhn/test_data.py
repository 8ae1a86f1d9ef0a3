"""Tests for torchstn.experiments.svhn.prepare and .data on a generated "format 1" release (PNGs + MATLAB v7.3
digitStruct.mat via h5py)."""

from __future__ import annotations

import json

import pytest
import torch

from torchstn.errors import DataError, OptionError
from torchstn.experiments.svhn import prepare
from torchstn.experiments.svhn.data import (
    NULL_CLASS,
    SVHNSequences,
    crop_box,
    crop_resize,
    encode_sequence,
    load_svhn,
    prepare_svhn,
    read_digit_struct,
    read_split,
)

h5py = pytest.importorskip("h5py")
pytest.importorskip("PIL")


from tests.fixtures import make_svhn  # noqa: E402


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("svhn")
    truth = make_svhn.make_svhn(root / "src")
    return root, truth


@pytest.fixture(scope="module")
def cache64(release):
    root, _ = release
    report = prepare_svhn(root / "src", root / "cache", 64, val_size=3, seed=0, log=None)
    return root / "cache", report


@pytest.mark.parametrize("split", ["train", "test", "extra"])
def test_reader_parses_boxes_and_labels_exactly(release, split):
    root, truth = release
    records = read_digit_struct(root / "src" / split / "digitStruct.mat")
    assert len(records) == len(truth[split])
    for rec, (name, boxes, digits) in zip(records, truth[split]):
        assert rec.name == name
        assert rec.digits == tuple(digits)  # label 10 read back as digit 0
        assert rec.boxes == tuple(tuple(float(v) for v in b) for b in boxes)


def test_fixture_has_both_bbox_layouts_and_the_mat_header(release):
    root, truth = release
    path = root / "src" / "train" / "digitStruct.mat"
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        refs = f["digitStruct/bbox"][()].reshape(-1)
        layouts = set()
        for ref in refs:
            ds = f[ref]["label"]
            layouts.add("refs" if h5py.check_dtype(ref=ds.dtype) is not None else "value")
            assert ds.shape[1] == 1
    assert layouts == {"refs", "value"}
    assert any(0 in digits for _, _, digits in truth["train"])  # stored as label 10


def test_encode_sequence_null_class():
    assert encode_sequence([]).tolist() == [NULL_CLASS] * 5
    assert encode_sequence([0, 5]).tolist() == [0, 5, 10, 10, 10]
    with pytest.raises(DataError, match="at most 5"):
        encode_sequence([1, 2, 3, 4, 5, 6])


def test_prepare_counts_labels_and_drops_long_sequences(release, cache64):
    _, truth = release
    cache, report = cache64
    assert report["dropped_longer_than_5"] == {"train": 1, "extra": 0, "test": 0}
    pool = len(truth["train"]) - 1 + len(truth["extra"])
    assert report["images"] == {"train": pool - 3, "val": 3, "test": len(truth["test"])}
    assert json.loads((cache / "svhn64_report.json").read_text()) == report
    expected = {f"{s}/{n}": d for s in ("train", "extra", "test") for n, _, d in truth[s]}
    seen = []
    for split in ("train", "val", "test"):
        raw = torch.load(cache / f"svhn64_{split}.pt", weights_only=True)  # plain tensors / strings only
        assert raw["images"].dtype == torch.uint8 and raw["images"].shape[1:] == (3, 64, 64)
        assert raw["labels"].dtype == torch.int64 and raw["labels"].shape == (len(raw["names"]), 5)
        for name, labels, length in zip(raw["names"], raw["labels"], raw["lengths"]):
            assert labels.tolist() == encode_sequence(expected[name]).tolist()
            assert int(length) == len(expected[name])
        seen += raw["names"]
    assert sorted(seen) == sorted(n for n, d in expected.items() if len(d) <= 5)
    assert all(n.startswith(("train/", "extra/")) for n in load_svhn(cache, "val").names)


def test_validation_split_is_seeded(release, cache64, tmp_path):
    root, _ = release
    again = prepare_svhn(root / "src", tmp_path / "a", 64, val_size=3, seed=0, extra=True, log=None)
    other = prepare_svhn(root / "src", tmp_path / "b", 64, val_size=3, seed=5, log=None)
    assert again == dict(cache64[1]) and other["images"] == again["images"]
    assert load_svhn(tmp_path / "a", "val").names == load_svhn(cache64[0], "val").names
    assert load_svhn(tmp_path / "b", "val").names != load_svhn(cache64[0], "val").names


def _bright_centre_dark_border(images: torch.Tensor, inner: float) -> None:
    """The union box fills the central ``inner`` fraction of the crop: bright (in red) inside, dark outside."""
    S = images.shape[-1]
    lo, hi = (1 - inner) / 2 * S, (1 + inner) / 2 * S
    core = images[:, 0, int(lo) + 4 : int(hi) - 4, int(lo) + 4 : int(hi) - 4].float()  # red: the union of the boxes
    assert core.min() > 200, "the digit boxes should fill the middle of the crop"
    a, b = int(lo) - 4, int(hi) + 4
    border = torch.cat(
        [
            images[..., :a].flatten(1),
            images[..., b:].flatten(1),
            images[..., :a, :].flatten(1),
            images[..., b:, :].flatten(1),
        ],
        1,
    ).float()
    assert border.max() < 60, "outside the enlarged box the crop should be background"


def test_crops_land_on_the_digit_boxes(cache64, release, tmp_path):
    for split in ("train", "test"):
        _bright_centre_dark_border(load_svhn(cache64[0], split).images, 1 / 1.3)
    root, _ = release
    report = prepare_svhn(root / "src", tmp_path, 128, extra=False, val_size=1, log=None)
    assert report["context"] == 2.0  # the looser set: twice the extent, digits at the same pixel size
    _bright_centre_dark_border(load_svhn(tmp_path, "test", 128).images, 1 / 2.6)


def test_crop_box_and_border_replication():
    assert crop_box([(0, 0, 10, 10)], expand=1.0, context=2.0) == (-5.0, -5.0, 15.0, 15.0)
    img = torch.zeros(1, 4, 4, dtype=torch.uint8)
    img[:, :, 0] = 200  # left column bright
    out = crop_resize(img, (-4, 0, 4, 4), 8)  # half outside on the left: the border column repeats
    assert out.shape == (1, 8, 8) and out[0, :, :4].min() == 200 and out[0, :, 6:].max() == 0


def test_sequences_dataset_crops_and_normalises(cache64):
    data = load_svhn(cache64[0], "train")
    x, y = SVHNSequences(data).batch(torch.arange(len(data)))
    assert x.shape == (len(data), 3, 64, 64) and y.shape == (len(data), 5)
    assert abs(float(x.mean())) < 1e-4  # the train split's own mean is subtracted
    g = torch.Generator().manual_seed(0)
    xc, _ = SVHNSequences(data, crop=54, train=True, generator=g).batch(torch.arange(4))
    xe, ye = SVHNSequences(data, crop=54)[0]
    assert xc.shape == (4, 3, 54, 54) and xe.shape == (3, 54, 54) and ye.dtype == torch.int64
    torch.testing.assert_close(xe, x[0, :, 5:59, 5:59])
    with pytest.raises(OptionError):
        SVHNSequences(data, crop=65)


def test_missing_or_bad_files_raise_data_error_naming_them(tmp_path):
    with pytest.raises(DataError, match="nowhere/train: missing SVHN split folder"):
        read_split(tmp_path / "nowhere", "train")
    (tmp_path / "src" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="digitStruct.mat: missing"):
        read_split(tmp_path / "src", "train")
    (tmp_path / "src" / "train" / "digitStruct.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DataError, match="not a MATLAB v7.3"):
        read_split(tmp_path / "src", "train")
    with h5py.File(tmp_path / "empty.mat", "w") as f:
        f.create_group("other")
    with pytest.raises(DataError, match="no group 'digitStruct'"):
        read_digit_struct(tmp_path / "empty.mat")
    partial = tmp_path / "partial"
    make_svhn.make_svhn(partial, {"train": 3, "test": 2})
    with pytest.raises(DataError, match="extra: missing SVHN split folder"):
        prepare_svhn(partial, tmp_path / "out", log=None)
    (partial / "test" / "1.png").unlink()
    with pytest.raises(DataError, match="1.png"):
        prepare_svhn(partial, tmp_path / "out", extra=False, val_size=1, log=None)
    with pytest.raises(DataError, match="torchstn svhn prepare"):
        load_svhn(tmp_path / "out", "train")  # all files or none
    assert not list((tmp_path / "out").iterdir())  # no partial files left behind
    with pytest.raises(OptionError, match="size"):
        prepare_svhn(partial, tmp_path / "out", size=4, log=None)


def test_h5py_missing_gives_install_hint(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("no h5py")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="pip install h5py"):
        prepare._h5py()
